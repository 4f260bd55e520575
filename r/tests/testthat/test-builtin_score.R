trained_folder <- function(dir) {
  df <- churn_table()
  trained <- ambidex:::train_model(df, list(target = "churn", exclude = "id"), seed = 3L)
  folder <- file.path(dir, "model")
  ambidex:::write_model_folder(trained, folder, name = "churn")
  folder
}

score_stage <- function(dir, folder, df, params = list(keep = list("id"))) {
  write_typed_table(df, file.path(dir, "score.csv"))
  ctx <- write_context(dir,
    inputs = list(data = list(kind = "table", path = file.path(dir, "score.csv")),
                  model = list(kind = "model", path = folder)),
    outputs = list(predictions = list(kind = "table", path = file.path(dir, "out", "pred.csv"))),
    params = params)
  capture.output(status <- run_stage(builtin = "score", context = ctx, exit = FALSE), type = "message")
  list(status = as.integer(status), result = read_result(ctx), path = file.path(dir, "out", "pred.csv"))
}

test_that("score keeps row count and order, ignores and counts extra columns", {
  dir <- local_tmp_dir()
  folder <- trained_folder(dir)
  df <- churn_table(n = 30, seed = 9)[, c("plan", "x2", "id", "x1", "churn")]
  df$x1[2] <- NA
  run <- score_stage(dir, folder, df, list(keep = list("id"), chunk_size = 7))
  expect_identical(run$status, 0L)
  pred <- read_typed_table(run$path)
  expect_identical(names(pred), c("id", "prediction", "score"))
  expect_identical(pred$id, df$id)
  expect_identical(levels(pred$prediction), c("No", "Yes"))
  expect_equal(pred$score, predict_model(folder, df)$score, tolerance = 1e-15)
  m <- run$result$metrics
  expect_identical(m[[which(vapply(m, `[[`, "", "name") == "extra_columns")]]$value, 2L)
})

test_that("a missing column fails naming it and writes nothing", {
  dir <- local_tmp_dir()
  folder <- trained_folder(dir)
  run <- score_stage(dir, folder, churn_table(n = 5)[, c("id", "x1", "plan")])
  expect_identical(run$result$error$code, "contract.missing_column")
  expect_match(run$result$error$message, "'x2'")
  expect_false(file.exists(run$path))
  expect_error(predict_model(folder, data.frame(x1 = 1, plan = "pro")), class = "ambidex_contract_missing_column")
})

test_that("unseen levels and lossy values are refused, lossless ones accepted", {
  dir <- local_tmp_dir()
  folder <- trained_folder(dir)
  cnd <- expect_error(predict_model(folder, data.frame(x1 = 1, x2 = 2L, plan = "gold")),
                      class = "ambidex_contract_unseen_level")
  expect_identical(cnd$level, "gold")
  expect_error(predict_model(folder, data.frame(x1 = "1,5", x2 = 2L, plan = "pro")),
               class = "ambidex_contract_type_mismatch")
  expect_error(predict_model(folder, data.frame(x1 = 1, x2 = 2.5, plan = "pro")),
               class = "ambidex_contract_type_mismatch")
  a <- predict_model(folder, data.frame(x1 = "1.25", x2 = 2, plan = "pro"))
  b <- predict_model(folder, data.frame(x1 = 1.25, x2 = 2L, plan = factor("pro")))
  expect_identical(a, b)
})

test_that("a payload whose sha256 differs is never deserialised", {
  dir <- local_tmp_dir()
  folder <- trained_folder(dir)
  saveRDS(list(evil = TRUE), file.path(folder, "model.rds"))
  cnd <- expect_error(load_model_payload(folder), class = "ambidex_artifact_hash_mismatch")
  expect_identical(cnd$file, "model.rds")
  expect_match(cnd$amb_message, cnd$expected, fixed = TRUE)
})

test_that("a payload replaced after it was verified is refused, never deserialised", {
  dir <- local_tmp_dir()
  folder <- trained_folder(dir)
  manifest <- ambidex:::verified_manifest(folder)
  saveRDS(list(evil = TRUE), file.path(folder, "model.rds"))  # swapped between the check and the load
  cnd <- expect_error(ambidex:::load_verified_payload(folder, manifest), class = "ambidex_artifact_hash_mismatch")
  expect_identical(cnd$file, "model.rds")
})

test_that("a payload saved with any compression R writes loads as saved", {
  dir <- local_tmp_dir()
  folder <- trained_folder(dir)
  path <- file.path(folder, "model.rds")
  m <- readRDS(path)
  manifest <- ambidex:::json_read(file.path(folder, "model.json"))
  manifest$files <- NULL  # not registered: no hashes to match after re-saving
  ambidex:::json_write(manifest, file.path(folder, "model.json"))
  for (compress in list(TRUE, FALSE, "bzip2", "xz")) {
    saveRDS(m, path, compress = compress)
    loaded <- load_model_payload(folder)
    attr(loaded, "manifest") <- NULL
    expect_identical(loaded, m)
  }
})

test_that("formats outside the allowlist and escaping paths are refused", {
  dir <- local_tmp_dir()
  folder <- trained_folder(dir)
  manifest <- ambidex:::json_read(file.path(folder, "model.json"))
  manifest$runtime$format <- "joblib"
  ambidex:::json_write(manifest, file.path(folder, "model.json"))
  expect_error(load_model_payload(folder), class = "ambidex_artifact_format_not_allowed")
  manifest$runtime$format <- "rds"
  manifest$runtime$payload <- "../model.rds"
  manifest$files <- NULL
  ambidex:::json_write(manifest, file.path(folder, "model.json"))
  expect_error(load_model_payload(folder), class = "ambidex_contract_invalid_manifest")
})

test_that("a newer model.json is refused before anything else", {
  dir <- local_tmp_dir()
  folder <- trained_folder(dir)
  manifest <- ambidex:::json_read(file.path(folder, "model.json"))
  manifest$contract_version <- 2L
  ambidex:::json_write(manifest, file.path(folder, "model.json"))
  expect_error(load_model_payload(folder), class = "ambidex_contract_version_unsupported")
})
