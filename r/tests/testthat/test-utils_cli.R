# A fake `ambidex` CLI: records its arguments, prints canned JSON shaped like the
# real CLI's --json output (tests/contract/test_r_cli_wrappers.py runs these
# wrappers against the real CLI), or an error envelope on stderr with exit
# code 3 when the first argument is "fail".
local_fake_cli <- function(env = parent.frame()) {
  dir <- local_tmp_dir(env)
  log <- file.path(dir, "args.log")
  cli <- file.path(dir, "ambidex")
  run <- function(id) paste0(
    '"id":"', id, '","kind":"experiment","experiment":"churn","pipeline":null,"status":"FINISHED",',
    '"started_at":"2024-06-01T10:00:00Z","ended_at":"2024-06-01T10:05:00Z","actor":"ann","git_commit":null,',
    '"lineage":{"config_hash":null,"packages":{"ambidex":"0.1.0"},"scripts":{}}')
  canned <- c(
    models_list = paste0(
      '[{"name":"churn","latest_version":3,"n_versions":3,"language":"python",',
      '"task":"binary_classification","created_at":"2024-06-01T10:00:00Z"},',
      '{"name":"ltv","latest_version":1,"n_versions":1,"language":"r","task":"regression",',
      '"created_at":"2024-06-02T10:00:00Z"}]'),
    models_show = paste0(
      '{"name":"churn","version":3,"status":"READY","path":"models/churn/3",',
      '"created_at":"2024-06-01T10:00:00Z","run_id":"abc","manifest":{"contract_version":1}}'),
    runs_list = paste0("[{", run("r1"), "}]"),
    runs_show = paste0(
      "{", run("abc"), ',"params":{"alpha":0.5},',
      '"metrics":[{"name":"auc","value":0.8,"step":0,"stage":null,"window":null}],',
      '"stage_runs":[],"artifacts":[],',
      '"model_versions":[{"name":"churn","version":3,"status":"READY","stage":null}]}'),
    runs_start = '{"run_id":"abc"}',
    runs_logged = '{"run_id":"abc","logged":1}',
    runs_end = '{"run_id":"abc","status":"FAILED"}',
    runs_log_model = '{"name":"churn","version":4,"status":"READY"}',
    fail = paste0('{"code":"registry.not_found","message":"No model nope.","exit_code":3,',
                  '"hint":"Run ambidex models list."}')
  )
  for (k in names(canned)) writeLines(canned[[k]], file.path(dir, paste0(k, ".json")))
  out <- function(k) sprintf("cat '%s'", file.path(dir, paste0(k, ".json")))
  writeLines(c(
    "#!/bin/sh",
    sprintf("printf '%%s\\n' \"$@\" > '%s'", log),
    "case \"$1 $2\" in",
    paste0("  'models list') ", out("models_list"), " ;;"),
    paste0("  'models show') ", out("models_show"), " ;;"),
    paste0("  'runs list') ", out("runs_list"), " ;;"),
    paste0("  'runs start') ", out("runs_start"), " ;;"),
    paste0("  'runs show') ", out("runs_show"), " ;;"),
    paste0("  'runs log-params'|'runs log-metrics'|'runs log-artifact') ", out("runs_logged"), " ;;"),
    paste0("  'runs end') ", out("runs_end"), " ;;"),
    paste0("  'runs log-model') ", out("runs_log_model"), " ;;"),
    paste0("  fail*) echo 'Traceback noise' >&2; ", out("fail"), " >&2; exit 3 ;;"),
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
  expect_identical(names(models), c("name", "latest_version", "n_versions", "language", "task", "created_at"))
  expect_identical(models$name, c("churn", "ltv"))
  expect_identical(models$latest_version, c(3L, 1L))
  expect_identical(models$language, c("python", "r"))
  expect_identical(readLines(log), c("models", "list", "--json"))
  runs <- amb_runs_list("churn")
  expect_identical(runs$id, "r1")
  expect_identical(runs$kind, "experiment")
  expect_identical(runs$pipeline, NA)
  expect_identical(runs$lineage[[1]]$packages$ambidex, "0.1.0")
  expect_identical(readLines(log), c("runs", "list", "--experiment", "churn", "--json"))
})

test_that("show commands return the parsed document", {
  log <- local_fake_cli()
  expect_identical(amb_model_show("churn", 3)$status, "READY")
  expect_identical(readLines(log), c("models", "show", "churn:3", "--json"))
  run <- amb_run_show("abc")
  expect_identical(run$id, "abc")
  expect_identical(run$status, "FINISHED")
  expect_identical(run$params$alpha, 0.5)
  expect_identical(run$metrics[[1]][c("name", "value", "step")], list(name = "auc", value = 0.8, step = 0L))
  expect_identical(run$model_versions[[1]]$version, 3L)
  expect_identical(readLines(log), c("runs", "show", "abc", "--json"))
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
