test_that("AUC is rank based with average ties", {
  expect_identical(ambidex:::metric_auc(c(0.1, 0.4, 0.35, 0.8), c(FALSE, FALSE, TRUE, TRUE)), 0.75)
  expect_identical(ambidex:::metric_auc(c(0.5, 0.5), c(FALSE, TRUE)), 0.5)
  expect_true(is.na(ambidex:::metric_auc(c(0.1, 0.2), c(TRUE, TRUE))))
})

test_that("log loss is clipped and regression metrics are exact", {
  expect_equal(ambidex:::metric_log_loss(c(1, 0.5)), log(2) / 2 + 1e-15 / 2, tolerance = 1e-12)
  expect_true(is.finite(ambidex:::metric_log_loss(0)))
  m <- ambidex:::metric_regression(c(1, 2, 3), c(1, 2, 5))
  expect_equal(m$rmse, sqrt(4 / 3))
  expect_equal(m$mae, 2 / 3)
  expect_equal(m$r2, 1 - 4 / (78 / 9))
})
