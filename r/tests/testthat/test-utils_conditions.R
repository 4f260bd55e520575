test_that("amb_abort builds one class per code, a family and a root class", {
  cnd <- tryCatch(ambidex:::amb_abort("contract.missing_column", "Column 'x' {is} missing.", "Add {it}."),
                  error = identity)
  expect_s3_class(cnd, c("ambidex_contract_missing_column", "ambidex_contract_error", "ambidex_error"))
  expect_identical(cnd$code, "contract.missing_column")
  expect_identical(cnd$hint, "Add {it}.")
  expect_identical(cnd$exit_code, 3L)
  expect_identical(cnd$amb_message, "Column 'x' {is} missing.")
})

test_that("exit codes follow SPEC section 5", {
  codes <- c("contract.int64_overflow", "artifact.hash_mismatch", "stage.failed",
             "stage.runtime_missing", "usage.invalid", "lock.held")
  expect_identical(vapply(codes, ambidex:::amb_exit_code, integer(1), USE.NAMES = FALSE),
                   c(3L, 1L, 1L, 2L, 2L, 75L))
})

test_that("foreign errors map to stage.failed", {
  f <- ambidex:::amb_condition_fields(simpleError("boom"))
  expect_identical(f$code, "stage.failed")
  expect_identical(f$message, "boom")
})
