#' Log a file as an artifact of a run
#'
#' Runs `ambidex runs log-artifact RUN PATH --json`.
#' @param run_id The run id.
#' @param path Path of the file.
#' @return The run id, invisibly.
#' @export
#' @examples
#' \dontrun{
#' amb_log_artifact(run, "report.html")
#' }
amb_log_artifact <- function(run_id, path) {
  amb_cli_json(c("runs", "log-artifact", run_id, normalizePath(path, mustWork = FALSE)))
  invisible(run_id)
}
