#' Start a tracked run
#'
#' Runs `ambidex runs start --experiment E --json`.
#' @param experiment Experiment name.
#' @return The new run id (a string).
#' @export
#' @examples
#' \dontrun{
#' run <- amb_start_run("churn")
#' amb_log_metrics(run, auc = 0.81)
#' amb_end_run(run)
#' }
amb_start_run <- function(experiment) {
  out <- amb_cli_json(c("runs", "start", "--experiment", experiment))
  if (!is.character(out$run_id)) {
    amb_abort("stage.failed", "`ambidex runs start --json` printed no run_id.",
              "Upgrade the ambidex Python package.")
  }
  out$run_id
}
