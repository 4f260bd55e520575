#' End a run
#'
#' Runs `ambidex runs end RUN --status STATUS --json`.
#' @param run_id The run id.
#' @param status `"FINISHED"`, `"FAILED"` or `"KILLED"`.
#' @return The run id, invisibly.
#' @export
#' @examples
#' \dontrun{
#' amb_end_run(run, status = "FAILED")
#' }
amb_end_run <- function(run_id, status = "FINISHED") {
  status <- rlang::arg_match0(status, c("FINISHED", "FAILED", "KILLED"))
  amb_cli_json(c("runs", "end", run_id, "--status", status))
  invisible(run_id)
}
