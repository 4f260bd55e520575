#' List runs
#'
#' Runs `ambidex runs list [--experiment E] --json`.
#' @param experiment Experiment name, or `NULL` for all.
#' @return A data.frame, one row per run.
#' @export
#' @examples
#' \dontrun{
#' amb_runs_list("churn")
#' }
amb_runs_list <- function(experiment = NULL) {
  args <- c("runs", "list", if (!is.null(experiment)) c("--experiment", experiment))
  records_to_df(amb_cli_json(args))
}
