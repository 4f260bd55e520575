write_raw <- function(dir, csv, columns, row_count = NULL) {
  path <- file.path(dir, "t.csv")
  writeBin(charToRaw(csv), path)
  n <- row_count %||% (length(gregexpr("\n", csv)[[1]]) - 1L)
  ambidex:::json_write(list(contract_version = 1L, row_count = n, columns = columns),
                       sub("csv$", "schema.json", path))
  path
}
`%||%` <- function(x, y) if (is.null(x)) y else x
col <- function(name, type, ...) list(name = name, type = type, nullable = TRUE, ...)

test_that("round trip preserves NA, NaN, Inf, empty strings, levels and UTC", {
  dir <- local_tmp_dir()
  df <- data.frame(
    i = c(.Machine$integer.max, NA, -5L),
    d = c(-Inf, NaN, 1 / 3),
    s = c("é ü", "", NA),
    b = c(NA, TRUE, FALSE),
    t = as.POSIXct(c(1700000000.123456, NA, -1), origin = "1970-01-01", tz = "UTC"),
    f = factor(c("lo", "hi", NA), levels = c("lo", "mid", "hi")),
    stringsAsFactors = FALSE
  )
  write_typed_table(df, file.path(dir, "x.csv"))
  back <- read_typed_table(file.path(dir, "x.csv"))
  expect_identical(back[c("i", "d", "s", "b", "f")], df[c("i", "d", "s", "b", "f")])
  expect_equal(as.double(back$t), as.double(df$t), tolerance = 1e-6)
  expect_identical(attr(back$t, "tzone"), "UTC")
})

test_that("fread quirks are handled: doubled quotes, leading spaces, the text NA", {
  dir <- local_tmp_dir()
  path <- write_raw(dir, 's,n\n"say ""hi"", ok",1\n" lead ",\nNA,2\n"""",3\n',
                    list(col("s", "string"), col("n", "integer")))
  back <- read_typed_table(path)
  expect_identical(back$s, c("say \"hi\", ok", " lead ", "NA", "\""))
  expect_identical(back$n, c(1L, NA, 2L, 3L))
})

test_that("integers beyond 32 bits become doubles, beyond 2^53 fail naming the column", {
  dir <- local_tmp_dir()
  path <- write_raw(dir, "big\n4294967296\n-9007199254740992\n", list(col("big", "integer")))
  expect_identical(read_typed_table(path)$big, c(4294967296, -9007199254740992))
  path <- write_raw(dir, "big\n1\n9007199254740993\n", list(col("big", "integer")))
  cnd <- expect_error(read_typed_table(path), class = "ambidex_contract_int64_overflow")
  expect_identical(cnd$column, "big")
  expect_match(cnd$amb_message, "9007199254740993")
})

test_that("a value that does not parse names file, line and column", {
  dir <- local_tmp_dir()
  cases <- list(
    list("x\n1\n1.5\n", "integer"), list("x\n1\nabc\n", "double"), list("x\n0x1A\n", "double"),
    list("x\nTrue\n", "boolean"), list("x\n2024-01-01 00:00:00\n", "timestamp"),
    list("x\n\"\"\n", "double")
  )
  for (case in cases) {
    path <- write_raw(dir, case[[1]], list(col("x", case[[2]])))
    cnd <- expect_error(read_typed_table(path), class = "ambidex_contract_invalid_table")
    expect_identical(cnd$column, "x")
    expect_match(cnd$amb_message, paste0(path, " line \\d+, column 'x'"))
  }
})

test_that("a label outside the sidecar levels is an invalid table", {
  dir <- local_tmp_dir()
  path <- write_raw(dir, "f\na\nz\n", list(col("f", "category", levels = I("a"))))
  cnd <- expect_error(read_typed_table(path), class = "ambidex_contract_invalid_table")
  expect_identical(cnd$line, 3L)
})

test_that("header and row count must match the sidecar", {
  dir <- local_tmp_dir()
  path <- write_raw(dir, "a,b\n1,2\n", list(col("b", "integer"), col("a", "integer")))
  expect_error(read_typed_table(path), class = "ambidex_contract_invalid_table")
  path <- write_raw(dir, "a\n1\n2\n", list(col("a", "integer")), row_count = 3L)
  expect_error(read_typed_table(path), class = "ambidex_contract_invalid_table")
  path <- write_raw(dir, "a,b\n1,2,3\n", list(col("a", "integer"), col("b", "integer")))
  expect_error(read_typed_table(path), class = "ambidex_contract_invalid_table")
})

test_that("a missing value in a non-nullable column is a type mismatch", {
  dir <- local_tmp_dir()
  path <- write_raw(dir, "a\n1\n\n", list(list(name = "a", type = "integer", nullable = FALSE)))
  expect_error(read_typed_table(path), class = "ambidex_contract_type_mismatch")
})

test_that("NaN is not missing for a non-nullable double column", {
  dir <- local_tmp_dir()
  path <- write_raw(dir, "a\nNaN\n", list(list(name = "a", type = "double", nullable = FALSE)))
  expect_identical(read_typed_table(path)$a, NaN)
})

test_that("a sidecar with a newer contract version is refused", {
  dir <- local_tmp_dir()
  path <- file.path(dir, "t.csv")
  writeLines("a", path)
  ambidex:::json_write(list(contract_version = 2L, row_count = 0L, columns = list()), file.path(dir, "t.schema.json"))
  expect_error(read_typed_table(path), class = "ambidex_contract_version_unsupported")
})

test_that("numeric columns read by fread still refuse a quoted empty field", {
  dir <- local_tmp_dir()
  path <- write_raw(dir, "i,d\n1,\n,2.5\n\"\",3\n", list(col("i", "integer"), col("d", "double")))
  cnd <- expect_error(read_typed_table(path), class = "ambidex_contract_invalid_table")
  expect_identical(cnd$column, "i")
  expect_identical(cnd$line, 4L)
  path <- write_raw(dir, "i,d\n1,\n,2.5\n3,NaN\n", list(col("i", "integer"), col("d", "double")))
  expect_identical(read_typed_table(path), data.frame(i = c(1L, NA, 3L), d = c(NA, 2.5, NaN)))
})
