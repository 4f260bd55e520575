train_stage <- function(dir, df, params, seed = 7L) {
  write_typed_table(df, file.path(dir, "data.csv"))
  ctx <- write_context(dir,
    inputs = list(data = list(kind = "table", path = file.path(dir, "data.csv"))),
    outputs = list(model = list(kind = "model", path = file.path(dir, "out", "model"))),
    params = params, seed = seed)
  capture.output(status <- run_stage(builtin = "train", context = ctx, exit = FALSE), type = "message")
  list(status = as.integer(status), result = read_result(ctx), folder = file.path(dir, "out", "model"), ctx = ctx)
}

test_that("glm binary training writes a valid, verifiable model folder", {
  dir <- local_tmp_dir()
  df <- churn_table()
  df$x1[c(3, 50)] <- NA
  df$plan[7] <- NA
  run <- train_stage(dir, df, list(target = "churn", exclude = list("id")))
  expect_identical(run$status, 0L)
  manifest <- ambidex:::json_read(file.path(run$folder, "model.json"))
  expect_invisible(validate_document("model", manifest))
  expect_identical(manifest$task, "binary_classification")
  expect_identical(manifest$target$positive, "Yes")
  expect_identical(vapply(manifest$signature$inputs, `[[`, "", "name"), c("x1", "x2", "plan"))
  w <- unlist(manifest$feature_importance$values)
  expect_equal(sum(w), 1)
  expect_true(all(w >= 0))
  expect_gt(w[["x1"]], w[["x2"]])
  expect_setequal(names(manifest$metrics), c("auc", "accuracy", "log_loss", "n_train", "n_valid"))
  expect_identical(manifest$metrics$n_valid, 40L)
  expect_identical(manifest$files$model.rds$sha256,
                   digest::digest(file = file.path(run$folder, "model.rds"), algo = "sha256"))
  expect_true(all(verify_golden(run$folder)$ok))
  expect_setequal(vapply(manifest$golden$negative, `[[`, "", "error"),
                  c("contract.missing_column", "contract.type_mismatch", "contract.unseen_level"))
  metric_names <- vapply(run$result$metrics, `[[`, "", "name")
  expect_true("auc" %in% metric_names)
})

test_that("missing values are imputed with the stored training median and mode", {
  dir <- local_tmp_dir()
  run <- train_stage(dir, churn_table(), list(target = "churn", features = list("x1", "plan")))
  model <- load_model_payload(run$folder)
  med <- model$info$x1$impute
  a <- predict_model(run$folder, data.frame(x1 = NA_real_, plan = factor(NA, levels = "basic")))
  b <- predict_model(run$folder, data.frame(x1 = med, plan = model$info$plan$impute))
  expect_identical(a, b)
})

test_that("training is deterministic for a seed", {
  d1 <- local_tmp_dir()
  d2 <- local_tmp_dir()
  r1 <- train_stage(d1, churn_table(), list(target = "churn", exclude = list("id")))
  r2 <- train_stage(d2, churn_table(), list(target = "churn", exclude = list("id")))
  m1 <- ambidex:::json_read(file.path(r1$folder, "model.json"))
  m2 <- ambidex:::json_read(file.path(r2$folder, "model.json"))
  expect_identical(m1$metrics, m2$metrics)
  expect_identical(m1$feature_importance, m2$feature_importance)
})

test_that("regression with glm reports rmse, mae and r2", {
  dir <- local_tmp_dir()
  df <- churn_table()
  df$y <- 2 * df$x1 + rnorm(nrow(df), sd = 0.1)
  run <- train_stage(dir, df, list(target = "y", features = list("x1", "x2")))
  manifest <- ambidex:::json_read(file.path(run$folder, "model.json"))
  expect_identical(manifest$task, "regression")
  expect_gt(manifest$metrics$r2, 0.9)
  expect_identical(manifest$signature$outputs[[1]]$type, "double")
  expect_true(all(verify_golden(run$folder)$ok))
})

test_that("ranger fits multiclass targets and records its library", {
  skip_if_not_installed("ranger")
  dir <- local_tmp_dir()
  df <- churn_table()
  df$segment <- factor(c("a", "b", "c")[1 + (df$x1 > 0) + (df$x2 > 15)])
  run <- train_stage(dir, df, list(target = "segment", features = list("x1", "x2"), num_trees = 50))
  expect_identical(run$status, 0L)
  manifest <- ambidex:::json_read(file.path(run$folder, "model.json"))
  expect_identical(manifest$task, "multiclass_classification")
  expect_identical(manifest$producer$library, "ranger")
  expect_null(manifest$target$positive)
  expect_true(all(verify_golden(run$folder)$ok))
})

test_that("bad params fail with a code", {
  dir <- local_tmp_dir()
  run <- train_stage(dir, churn_table(), list(target = "nope"))
  expect_identical(run$result$error$code, "contract.missing_column")
  run <- train_stage(dir, churn_table(), list(target = "churn", positive = "Maybe"))
  expect_identical(run$result$error$code, "stage.failed")
})
