test_that("json_text fixes jsonlite's traps", {
  txt <- ambidex:::json_text(list(
    scalar = 1L, kept_array = I("a"), empty_array = list(), empty_object = ambidex:::json_object(),
    na = NA, null = NULL, nested = list(x = NA_real_)
  ), pretty = FALSE)
  expect_identical(txt, paste0('{"scalar":1,"kept_array":["a"],"empty_array":[],',
                               '"empty_object":{},"na":null,"null":null,"nested":{"x":null}}'))
})

test_that("doubles round-trip exactly and whole numbers stay integers", {
  x <- c(0.1 + 0.2, 1 / 3, 1e300, -2.5e-310, 2^53, 123456789.123, pi)
  back <- unlist(jsonlite::fromJSON(ambidex:::json_text(I(x))))
  expect_identical(back, x)
  expect_identical(ambidex:::json_text(list(n = 2^53, m = 1e6), pretty = FALSE),
                   '{"n":9007199254740992,"m":1000000}')
  expect_identical(ambidex:::json_text(list(a = NaN, b = Inf), pretty = FALSE), '{"a":null,"b":null}')
})

test_that("fmt_double is the shortest text that round-trips", {
  expect_identical(ambidex:::fmt_double(c(0.1, 0.1 + 0.2, 1e16, NaN, Inf, -Inf, NA, 100)),
                   c("0.1", "0.30000000000000004", "1e+16", "NaN", "Inf", "-Inf", NA, "100"))
  set.seed(3)
  x <- c(runif(2000), rnorm(2000) * 10^sample(-300:300, 2000, replace = TRUE))
  expect_identical(as.double(ambidex:::fmt_double(x)), x)
})

test_that("json_read keeps unknown fields and tells {} from []", {
  path <- file.path(local_tmp_dir(), "x.json")
  writeLines('{"a": {}, "b": [], "future_field": {"deep": [1, 2]}}', path)
  doc <- ambidex:::json_read(path)
  expect_identical(ambidex:::json_type_of(doc$a), "object")
  expect_identical(ambidex:::json_type_of(doc$b), "array")
  ambidex:::json_write(doc, path)
  expect_identical(ambidex:::json_text(ambidex:::json_read(path), pretty = FALSE),
                   '{"a":{},"b":[],"future_field":{"deep":[1,2]}}')
})

test_that("a file that is not JSON is contract.invalid_document", {
  path <- file.path(local_tmp_dir(), "bad.json")
  writeLines("{nope", path)
  expect_error(ambidex:::json_read(path), class = "ambidex_contract_invalid_document")
})
