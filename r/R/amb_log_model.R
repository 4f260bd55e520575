#' Log (register) a model folder from a run
#'
#' Runs `ambidex runs log-model RUN NAME FOLDER --json`.
#' @param run_id The run id.
#' @param name Model name.
#' @param folder A model folder (model.json + payload).
#' @return The parsed JSON answer (e.g. the registered version), invisibly.
#' @export
#' @examples
#' \dontrun{
#' amb_log_model(run, "churn", "out/model")
#' }
amb_log_model <- function(run_id, name, folder) {
  invisible(amb_cli_json(c("runs", "log-model", run_id, name, normalizePath(folder, mustWork = FALSE))))
}
