# amb_drift_compare, amb_drift_check and amb_kpi_show through an injected fake CLI.

local_fake_drift_cli <- function(env = parent.frame()) {
  dir <- local_tmp_dir(env)
  log <- file.path(dir, "args.log")
  cli <- file.path(dir, "ambidex")
  feats <- paste0('[{"feature":"tenure","kind":"numeric","status":"alert","w":0.5,"impact_psi":0.4,"psi":0.8,',
                  '"median_shift":1.2,"reasons":"psi>=0.25"},',
                  '{"feature":"plan","kind":"categorical","status":"ok","w":0.5,"impact_psi":0.001,"psi":0.002,',
                  '"median_shift":null,"reasons":""}]')
  writeLines(c(
    "#!/bin/sh",
    sprintf("printf '%%s\\n' \"$@\" > '%s'", log),
    "case \"$1 $2\" in",
    sprintf("  'drift compare') echo '{\"status\":\"alert\",\"dataset_drift\":true,\"weighted_psi\":0.4,\"drifted_importance_share\":0.5,\"uniform_importance\":false,\"features\":%s}' ;;", feats),
    sprintf("  'drift check') echo '{\"model\":\"churn\",\"version\":3,\"alert\":true,\"status\":\"alert\",\"baselines\":{\"reference\":{\"status\":\"alert\",\"features\":%s}}}' ;;", feats),
    "  'kpi show') echo '[{\"model\":\"churn\",\"version\":3,\"metric\":\"roc_auc\",\"value\":0.81,\"se\":0.01,\"n\":900,\"is_estimated\":false,\"method\":\"analytic\"},{\"model\":\"churn\",\"version\":3,\"metric\":\"accuracy\",\"value\":0.7,\"se\":null,\"n\":1000,\"is_estimated\":true,\"method\":\"cbpe\"}]' ;;",
    "  *) echo '{\"code\":\"registry.not_found\",\"message\":\"No model.\",\"exit_code\":1}' >&2; exit 1 ;;",
    "esac"
  ), cli)
  Sys.chmod(cli, "0755")
  withr::local_options(ambidex.cli = cli, .local_envir = env)
  log
}

test_that("amb_drift_compare returns features sorted by impact with the verdict", {
  log <- local_fake_drift_cli()
  d <- amb_drift_compare("ref.csv", "cur.parquet", importance = "imp.json", columns = c("tenure", "plan"))
  expect_s3_class(d, "data.frame")
  expect_identical(d$feature, c("tenure", "plan"))
  expect_identical(d$median_shift, c(1.2, NA))
  expect_true(attr(d, "dataset_drift"))
  expect_identical(attr(d, "status"), "alert")
  expect_identical(readLines(log), c("drift", "compare", "ref.csv", "cur.parquet", "--importance", "imp.json",
                                     "--columns", "tenure,plan", "--json"))
})

test_that("amb_drift_check passes the window and returns the reference baseline", {
  log <- local_fake_drift_cli()
  d <- amb_drift_check("churn", "2024-11-01/2024-12-01", data = "churn.csv", time_column = "signup_month")
  expect_identical(d$status, c("alert", "ok"))
  expect_true(attr(d, "alert"))
  expect_identical(attr(d, "version"), 3L)
  expect_identical(readLines(log), c("drift", "check", "churn", "--window", "2024-11-01/2024-12-01",
                                     "--data", "churn.csv", "--time-column", "signup_month", "--exit-zero",
                                     "--json"))
  expect_error(amb_drift_check("churn", "2024-11-01/2024-12-01", baseline = "t-1"),
               class = "ambidex_usage_invalid")
})

test_that("amb_kpi_show flags estimated KPIs", {
  log <- local_fake_drift_cli()
  k <- amb_kpi_show("churn", metric = "roc_auc")
  expect_identical(k$is_estimated, c(FALSE, TRUE))
  expect_identical(k$se, c(0.01, NA))
  expect_identical(readLines(log), c("kpi", "show", "--model", "churn", "--metric", "roc_auc", "--last", "50",
                                     "--json"))
})

test_that("an error envelope becomes a classed condition", {
  local_fake_drift_cli()
  withr::local_options(ambidex.cli = file.path(dirname(getOption("ambidex.cli")), "ambidex"))
  expect_error(ambidex:::amb_cli_json(c("drift", "show")), class = "ambidex_registry_not_found")
})
