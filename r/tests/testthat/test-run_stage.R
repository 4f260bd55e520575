stage_with_script <- function(dir, code, outputs = list()) {
  script <- file.path(dir, "stage.R")
  writeLines(code, script)
  list(script = script, context = write_context(dir, outputs = outputs))
}

test_that("a script's main(ctx) runs and result.json records metrics, params and outputs", {
  dir <- local_tmp_dir()
  s <- stage_with_script(dir, c(
    "main <- function(ctx) {",
    "  ctx_write_table(ctx, 'out', data.frame(x = c(1.5, NA)))",
    "  ctx_log_metric(ctx, 'rows', 2)",
    "  ctx_log_metric(ctx, 'loss', 0.1 + 0.2, step = 3)",
    "  ctx_log_param(ctx, 'alpha', 0.5)",
    "}"
  ), outputs = list(out = list(kind = "table", path = file.path(dir, "out", "out.csv"))))
  status <- run_stage(s$script, context = s$context, exit = FALSE)
  expect_identical(as.integer(status), 0L)
  res <- read_result(s$context)
  expect_invisible(validate_document("result", res))
  expect_identical(res$status, "ok")
  expect_identical(res$metrics[[2]], list(name = "loss", value = 0.1 + 0.2, step = 3L))
  expect_identical(res$params$alpha, 0.5)
  expect_identical(res$outputs$out$kind, "table")
  expect_null(res$error)
  expect_identical(read_typed_table(file.path(dir, "out", "out.csv"))$x, c(1.5, NA))
})

test_that("top-level script code can read the context with stage_context()", {
  dir <- local_tmp_dir()
  s <- stage_with_script(dir, "ctx <- ambidex::stage_context(); ambidex::ctx_log_metric(ctx, 'seed', ctx$seed)")
  run_stage(s$script, context = s$context, exit = FALSE)
  res <- read_result(s$context)
  expect_identical(res$metrics[[1]]$value, 42L)
})

test_that("an ambidex error becomes status error with its code, and never quits with exit = FALSE", {
  dir <- local_tmp_dir()
  s <- stage_with_script(dir, "main <- function(ctx) ambidex:::amb_abort('contract.missing_column', 'no x', 'add x')")
  msg <- capture.output(status <- run_stage(s$script, context = s$context, exit = FALSE), type = "message")
  expect_match(paste(msg, collapse = "\n"), "main\\(ctx\\)")
  expect_identical(as.integer(status), 1L)
  res <- read_result(s$context)
  expect_invisible(validate_document("result", res))
  expect_identical(res$error, list(code = "contract.missing_column", message = "no x", hint = "add x"))
})

test_that("a plain stop() is stage.failed and the message is kept", {
  dir <- local_tmp_dir()
  s <- stage_with_script(dir, "main <- function(ctx) stop('the data is {weird}')")
  err <- capture.output(run_stage(s$script, context = s$context, exit = FALSE), type = "message")
  res <- read_result(s$context)
  expect_identical(res$error$code, "stage.failed")
  expect_identical(res$error$message, "the data is {weird}")
  expect_true(any(grepl("ambidex stage failed \\[stage.failed\\]", err)))
})

test_that("a declared output that was not written fails the stage", {
  dir <- local_tmp_dir()
  s <- stage_with_script(dir, "main <- function(ctx) invisible()",
                         outputs = list(model = list(kind = "model", path = file.path(dir, "out", "model"))))
  capture.output(run_stage(s$script, context = s$context, exit = FALSE), type = "message")
  res <- read_result(s$context)
  expect_identical(res$status, "error")
  expect_match(res$error$message, "did not write its declared model output 'model'")
})

test_that("a newer context is refused with version_unsupported before anything runs", {
  dir <- local_tmp_dir()
  script <- file.path(dir, "stage.R")
  writeLines("stop('must not run')", script)
  ctx <- write_context(dir, contract_version = 2L)
  capture.output(run_stage(script, context = ctx, exit = FALSE), type = "message")
  res <- read_result(ctx)
  expect_identical(res$error$code, "contract.version_unsupported")
  expect_match(res$error$hint, "Upgrade")
})

test_that("Rscript exits with status 1 on failure and 0 on success", {
  dir <- local_tmp_dir()
  s <- stage_with_script(dir, "main <- function(ctx) stop('boom')")
  rscript <- file.path(R.home("bin"), "Rscript")
  libs <- paste(.libPaths(), collapse = .Platform$path.sep)
  run <- function(script) {
    withr::with_envvar(c(AMBIDEX_CONTEXT = s$context, R_LIBS = libs), suppressWarnings(system2(
      rscript, c("--vanilla", "-e", shQuote(sprintf("ambidex::run_stage('%s')", script))),
      stdout = FALSE, stderr = FALSE
    )))
  }
  expect_identical(run(s$script), 1L)
  expect_identical(read_result(s$context)$status, "error")
  writeLines("main <- function(ctx) invisible()", s$script)
  expect_identical(run(s$script), 0L)
  expect_identical(read_result(s$context)$status, "ok")
})

test_that("ctx helpers refuse undeclared names and wrong kinds", {
  dir <- local_tmp_dir()
  ctx_path <- write_context(dir, inputs = list(m = list(kind = "model", path = dir)))
  ctx <- stage_context(ctx_path)
  expect_error(ctx_input_table(ctx, "m"), class = "ambidex_stage_failed")
  expect_error(ctx_output_path(ctx, "nope"), class = "ambidex_stage_failed")
  expect_error(ctx_log_metric(ctx, "x", 1, step = -1), class = "ambidex_stage_failed")
  expect_error(ctx_log_artifact(ctx, "../escape.txt"), class = "ambidex_stage_failed")
  expect_identical(ctx_input_model(ctx, "m"), dir)
})

test_that("warnings are recorded in result.json, in order, and not muffled", {
  dir <- local_tmp_dir()
  s <- stage_with_script(dir, c(
    "main <- function(ctx) {",
    "  warning('column x has 3 missing values')",
    "  x <- log(-1)",
    "  ctx_log_metric(ctx, 'ok', 1)",
    "}"
  ))
  seen <- character(0)
  status <- withCallingHandlers(
    run_stage(s$script, context = s$context, exit = FALSE),
    warning = function(w) {
      seen <<- c(seen, conditionMessage(w))
      invokeRestart("muffleWarning")
    }
  )
  expect_identical(as.integer(status), 0L)
  # the warnings still reached the caller's handlers (R prints them to stderr by default)
  expect_identical(seen, c("column x has 3 missing values", "NaNs produced"))
  res <- read_result(s$context)
  expect_invisible(validate_document("result", res))
  expect_identical(res$status, "ok")
  expect_identical(res$warnings, list("column x has 3 missing values", "NaNs produced"))
})

test_that("no warnings is an empty array; warnings are kept on error and capped at 100", {
  dir <- local_tmp_dir()
  s <- stage_with_script(dir, "main <- function(ctx) invisible()")
  run_stage(s$script, context = s$context, exit = FALSE)
  expect_identical(read_result(s$context)$warnings, list())
  expect_match(paste(readLines(file.path(dirname(s$context), "result.json")), collapse = ""),
               '"warnings": ?\\[\\]')
  writeLines("main <- function(ctx) { warning('about to fail'); stop('boom') }", s$script)
  suppressWarnings(capture.output(run_stage(s$script, context = s$context, exit = FALSE), type = "message"))
  res <- read_result(s$context)
  expect_identical(res$error$code, "stage.failed")
  expect_identical(res$warnings, list("about to fail"))
  writeLines("main <- function(ctx) for (i in 1:130) warning(paste0('w', i))", s$script)
  suppressWarnings(run_stage(s$script, context = s$context, exit = FALSE))
  got <- unlist(read_result(s$context)$warnings)
  expect_length(got, 101L)
  expect_identical(got[1:2], c("w1", "w2"))
  expect_identical(got[101], "... and 30 more warning(s), not recorded")
})

test_that("a missing package is stage.runtime_missing naming it, with an install hint", {
  dir <- local_tmp_dir()
  for (code in c("library(notapkgambidex)", "main <- function(ctx) notapkgambidex::f()",
                 "main <- function(ctx) loadNamespace('notapkgambidex')")) {
    s <- stage_with_script(dir, code)
    err <- capture.output(status <- run_stage(s$script, context = s$context, exit = FALSE), type = "message")
    expect_identical(as.integer(status), 1L)
    res <- read_result(s$context)
    expect_invisible(validate_document("result", res))
    expect_identical(res$error$code, "stage.runtime_missing")
    expect_match(res$error$message, "R package 'notapkgambidex'", fixed = TRUE)
    expect_match(res$error$hint, "apt-get install r-cran-notapkgambidex", fixed = TRUE)
    expect_true(any(grepl("[stage.runtime_missing]", err, fixed = TRUE)))
  }
  expect_identical(ambidex:::amb_exit_code("stage.runtime_missing"), 2L)
})

test_that("under Rscript a warning still prints to stderr and is in result.json", {
  dir <- local_tmp_dir()
  s <- stage_with_script(dir, "main <- function(ctx) warning('careful: few rows')")
  rscript <- file.path(R.home("bin"), "Rscript")
  libs <- paste(.libPaths(), collapse = .Platform$path.sep)
  err_file <- file.path(dir, "stderr.log")
  status <- withr::with_envvar(c(AMBIDEX_CONTEXT = s$context, R_LIBS = libs), system2(
    rscript, c("--vanilla", "-e", shQuote(sprintf("ambidex::run_stage('%s')", s$script))),
    stdout = FALSE, stderr = err_file
  ))
  expect_identical(status, 0L)
  expect_match(paste(readLines(err_file), collapse = "\n"), "careful: few rows", fixed = TRUE)
  expect_identical(read_result(s$context)$warnings, list("careful: few rows"))
})
