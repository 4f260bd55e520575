#' Show a run
#'
#' Runs `ambidex runs show RUN --json`.
#' @param run_id The run id.
#' @return The parsed JSON document (a list: params, metrics, artifacts, ...).
#' @export
#' @examples
#' \dontrun{
#' amb_run_show("0123456789abcdef0123456789abcdef")$metrics
#' }
amb_run_show <- function(run_id) {
  amb_cli_json(c("runs", "show", run_id))
}
