small_schema <- list(
  type = "object", required = list("id", "kind"),
  properties = list(
    id = list(type = "string", pattern = "^[a-z]+$", minLength = 2),
    kind = list(enum = list("a", "b")),
    n = list(type = "integer", minimum = 0),
    version = list(const = 1),
    tags = list(type = "array", items = list(type = "string")),
    child = list(`$ref` = "#/$defs/child"),
    maybe = list(type = list("string", "null"))
  ),
  additionalProperties = FALSE,
  `$defs` = list(child = list(type = "object", required = list("x"),
                              oneOf = list(list(required = list("x")), list(required = list("y")))))
)

errs <- function(doc) ambidex:::schema_errors(doc, small_schema)

test_that("the subset validator accepts a valid document", {
  doc <- list(id = "ab", kind = "a", n = 3, version = 1L, tags = list("x"), child = list(x = 1), maybe = NULL)
  expect_identical(errs(doc), character())
})

test_that("each keyword reports its violation with a JSON path", {
  expect_match(errs(list(kind = "a")), "missing required field 'id'")
  expect_match(errs(list(id = "A1", kind = "a")), "\\$\\.id: 'A1' does not match")
  expect_match(errs(list(id = "a", kind = "a")), "shorter than 2")
  expect_match(errs(list(id = "ab", kind = "c")), "must be one of")
  expect_match(errs(list(id = "ab", kind = "a", n = 1.5)), "expected integer, got number")
  expect_match(errs(list(id = "ab", kind = "a", n = -1)), "must be >= 0")
  expect_match(errs(list(id = "ab", kind = "a", version = 2)), "must equal 1")
  expect_match(errs(list(id = "ab", kind = "a", tags = list(1))), "\\$\\.tags\\[0\\]: expected string")
  expect_match(errs(list(id = "ab", kind = "a", extra = 1)), "unknown field")
  expect_match(errs(list(id = "ab", kind = "a", child = list(x = 1, y = 2))), "exactly one of oneOf")
  expect_match(errs(list(id = "ab", kind = "a", maybe = 3)), "expected string or null")
  expect_match(errs(list(id = "ab", kind = "a", tags = ambidex:::json_object())), "expected array, got object")
})

test_that("enum and const compare JSON values: a string is never a number or a boolean", {
  eq <- ambidex:::json_equal
  expect_true(eq("a", "a"))
  expect_true(eq(1, 1L))  # one JSON number
  expect_true(eq(TRUE, TRUE))
  expect_false(eq("1", 1))
  expect_false(eq(1, "1"))
  expect_false(eq("TRUE", TRUE))
  expect_false(eq(TRUE, 1))
  expect_false(eq("a", NULL))
  expect_true(eq(NULL, NULL))
  expect_true(eq(list("a", 1), list("a", 1)))  # arrays and objects: by their JSON text
  expect_false(eq(list(x = 1), list(x = "1")))
  expect_false(eq("a", list("a")))
})

test_that("validate_document names the kinds it knows", {
  expect_error(validate_document("nope", list()), "must be one of \"context\"")
})

test_that("JSON integers: 1.0 is an integer, as in JSON Schema 2020-12", {
  expect_true(ambidex:::json_is_type(1, "integer"))
  expect_false(ambidex:::json_is_type(1.5, "integer"))
})

test_that("the shipped schemas use only keywords the R validator knows", {
  dir <- system.file("contract", "schemas", package = "ambidex")
  for (path in list.files(dir, pattern = "\\.json$", full.names = TRUE)) {
    expect_identical(ambidex:::schema_unsupported_keywords(ambidex:::json_read(path)), character(),
                     label = basename(path))
  }
})

test_that("the shipped schemas are a byte-identical copy of contract/schemas", {
  skip_without_repo()
  repo <- file.path(repo_contract_dir(), "schemas")
  shipped <- system.file("contract", "schemas", package = "ambidex")
  want <- sort(list.files(repo, pattern = "\\.json$"))
  expect_identical(sort(list.files(shipped, pattern = "\\.json$")), want,
                   info = "Run: cp contract/schemas/*.json r/inst/contract/schemas/ and reinstall")
  for (f in want) {
    expect_identical(unname(tools::md5sum(file.path(shipped, f))), unname(tools::md5sum(file.path(repo, f))),
                     info = paste(f, "is stale: cp contract/schemas/*.json r/inst/contract/schemas/ and reinstall"))
  }
})

test_that("validate_document refuses a newer contract_version first, with an upgrade hint", {
  cnd <- expect_error(validate_document("model", list(contract_version = 2, name = 1)),
                      class = "ambidex_contract_version_unsupported")
  expect_match(cnd$hint, "reinstall the R package")
})

test_that("validate_document uses invalid_manifest for models, invalid_document otherwise", {
  expect_error(validate_document("model", list(contract_version = 1)), class = "ambidex_contract_invalid_manifest")
  expect_error(validate_document("table", list(contract_version = 1)), class = "ambidex_contract_invalid_document")
  expect_invisible(validate_document("table", list(contract_version = 1, row_count = 0, columns = list())))
})

test_that("AMBIDEX_CONTRACT_DIR points the validator at another schema folder", {
  dir <- local_tmp_dir()
  dir.create(file.path(dir, "schemas"))
  writeLines('{"type": "object", "required": ["only"]}', file.path(dir, "schemas", "table.v1.json"))
  withr::local_envvar(AMBIDEX_CONTRACT_DIR = dir)
  expect_error(validate_document("table", list(contract_version = 1, row_count = 0, columns = list())),
               class = "ambidex_contract_invalid_document")
  expect_invisible(validate_document("table", list(only = 1)))
})
