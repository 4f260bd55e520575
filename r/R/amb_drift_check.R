#' Check a model's window for drift
#'
#' Runs `ambidex drift check MODEL --window START/END [--data ...] --exit-zero --json` and
#' returns the features against the training reference, sorted by impact. The window is
#' profiled once and stored; every number lands in the registry (see `ambidex drift show`).
#' @param target Model name (`"churn"` is the live champion or latest version), `"churn:3"`, or a pipeline name.
#' @param window The window, `"START/END"` (half-open, UTC), e.g. `"2024-11-01/2024-12-01"`.
#' @param data Rows of the window: a CSV/Parquet path, `"sql:TABLE"` or `"mart:NAME"`; `NULL` if already profiled.
#' @param time_column Keep only rows of `data` whose `time_column` lies in the window.
#' @param reference Training reference file, needed once if none is stored and the training input is gone.
#' @param baseline Which baseline's features to return: `"reference"`, `"t-1"` or `"rolling"`.
#' @return A data.frame, one row per feature, with attributes `alert` (dataset drift on the
#'   reference or T-1 baseline), `status`, `model`, `version` and `document` (the full JSON as a list).
#' @export
#' @examples
#' \dontrun{
#' d <- amb_drift_check("churn_py", "2024-11-01/2024-12-01", data = "churn.csv",
#'                      time_column = "signup_month")
#' if (attr(d, "alert")) print(d[d$status != "ok", c("feature", "status", "impact_psi")])
#' }
amb_drift_check <- function(target, window, data = NULL, time_column = NULL, reference = NULL,
                            baseline = "reference") {
  args <- c("drift", "check", target, "--window", window,
            if (!is.null(data)) c("--data", data),
            if (!is.null(time_column)) c("--time-column", time_column),
            if (!is.null(reference)) c("--reference", reference),
            "--exit-zero")
  doc <- amb_cli_json(args)
  if (is.null(doc$baselines)) doc <- doc[[1]]  # a pipeline target returns one document per model
  base <- doc$baselines[[baseline]]
  if (is.null(base)) {
    amb_abort("usage.invalid", paste0("No '", baseline, "' baseline in this check."),
              "The first window has only the reference baseline; use baseline = \"reference\".")
  }
  df <- records_to_df(base$features %||% list())
  attr(df, "alert") <- isTRUE(doc$alert)
  attr(df, "status") <- doc$status
  attr(df, "model") <- doc$model
  attr(df, "version") <- doc$version
  attr(df, "document") <- doc
  df
}
