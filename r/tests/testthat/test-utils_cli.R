# A fake `ambidex` CLI: records its arguments, prints canned JSON, or an error
# envelope on stderr with exit code 3 when the first argument is "fail".
local_fake_cli <- function(env = parent.frame()) {
  dir <- local_tmp_dir(env)
  log <- file.path(dir, "args.log")
  cli <- file.path(dir, "ambidex")
  writeLines(c(
    "#!/bin/sh",
    sprintf("printf '%%s\\n' \"$@\" > '%s'", log),
    "case \"$1 $2\" in",
    "  'models list') echo '[{\"name\":\"churn\",\"latest\":3,\"champion\":2,\"tags\":[\"a\"]},{\"name\":\"ltv\",\"latest\":1,\"champion\":null,\"tags\":[]}]' ;;",
    "  'models show') echo '{\"name\":\"churn\",\"version\":3,\"status\":\"READY\"}' ;;",
    "  'runs list') echo '{\"runs\":[{\"run_id\":\"r1\",\"status\":\"FINISHED\"}]}' ;;",
    "  'runs start') echo '{\"run_id\":\"abc\"}' ;;",
    "  'runs show') echo '{\"run_id\":\"abc\",\"metrics\":{\"auc\":0.8}}' ;;",
    "  'runs log-params'|'runs log-metrics'|'runs log-artifact'|'runs end') echo '{\"ok\":true}' ;;",
    "  'runs log-model') echo '{\"name\":\"churn\",\"version\":4}' ;;",
    "  fail*) echo 'Traceback noise' >&2; echo '{\"code\":\"registry.not_found\",\"message\":\"No model nope.\",\"exit_code\":3,\"hint\":\"Run ambidex models list.\"}' >&2; exit 3 ;;",
    "  crash*) echo 'segfault' >&2; exit 139 ;;",
    "esac"
  ), cli)
  Sys.chmod(cli, "0755")
  withr::local_options(ambidex.cli = cli, .local_envir = env)
  log
}

test_that("list commands return data frames", {
  log <- local_fake_cli()
  models <- amb_models_list()
  expect_s3_class(models, "data.frame")
  expect_identical(models$name, c("churn", "ltv"))
  expect_identical(models$champion, c(2L, NA))
  expect_identical(models$tags[[1]], list("a"))
  expect_identical(readLines(log), c("models", "list", "--json"))
  runs <- amb_runs_list("churn")
  expect_identical(runs$run_id, "r1")
  expect_identical(readLines(log), c("runs", "list", "--experiment", "churn", "--json"))
})

test_that("show commands return the parsed document", {
  log <- local_fake_cli()
  expect_identical(amb_model_show("churn", 3)$status, "READY")
  expect_identical(readLines(log), c("models", "show", "churn:3", "--json"))
  expect_identical(amb_run_show("abc")$metrics$auc, 0.8)
})

test_that("tracking verbs pass exact arguments", {
  log <- local_fake_cli()
  run <- amb_start_run("churn exp")
  expect_identical(run, "abc")
  expect_identical(readLines(log), c("runs", "start", "--experiment", "churn exp", "--json"))
  amb_log_params(run, method = "glm", trees = 200L, flag = TRUE)
  expect_identical(readLines(log), c("runs", "log-params", "abc", "method=glm", "trees=200", "flag=true", "--json"))
  amb_log_metrics(run, loss = 0.1 + 0.2, step = 2)
  expect_identical(readLines(log), c("runs", "log-metrics", "abc", "loss=0.30000000000000004", "--step", "2", "--json"))
  amb_log_metrics(run, list(a = 1))
  expect_identical(readLines(log)[4], "a=1")
  dir <- local_tmp_dir()
  amb_log_model(run, "churn", dir)
  expect_identical(readLines(log), c("runs", "log-model", "abc", "churn", dir, "--json"))
  amb_end_run(run, "FAILED")
  expect_identical(readLines(log), c("runs", "end", "abc", "--status", "FAILED", "--json"))
  expect_error(amb_log_params(run, 1), class = "ambidex_usage_invalid")
})

test_that("an error envelope is re-signalled with its code as the class", {
  local_fake_cli()
  cnd <- expect_error(ambidex:::amb_cli_json("fail"), class = "ambidex_registry_not_found")
  expect_s3_class(cnd, "ambidex_error")
  expect_identical(cnd$exit_code, 3L)
  expect_identical(cnd$hint, "Run ambidex models list.")
  expect_identical(cnd$amb_message, "No model nope.")
})

test_that("a crash without an envelope and a missing CLI are reported", {
  local_fake_cli()
  cnd <- expect_error(ambidex:::amb_cli_json("crash"), class = "ambidex_stage_crashed")
  expect_match(cnd$amb_message, "segfault")
  withr::local_options(ambidex.cli = file.path(local_tmp_dir(), "no-such-ambidex"))
  expect_error(amb_models_list(), class = "ambidex_stage_runtime_missing")
})

test_that("the CLI does not inherit R's library folders in LD_LIBRARY_PATH", {
  ld <- paste(file.path(R.home(), "lib"), "/usr/lib/x86_64-linux-gnu",
              "/usr/lib/jvm/default-java/lib/server", "/opt/mine/lib", sep = ":")
  expect_identical(cli_env(ld), paste0("LD_LIBRARY_PATH=", shQuote("/opt/mine/lib")))
  expect_identical(cli_env(""), character())
})
