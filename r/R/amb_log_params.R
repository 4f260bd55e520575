#' Log parameters of a run
#'
#' Runs `ambidex runs log-params RUN KEY=VALUE ... --json`.
#' @param run_id The run id.
#' @param ... Named values (`alpha = 0.1`), or one named list.
#' @return The run id, invisibly.
#' @export
#' @examples
#' \dontrun{
#' amb_log_params(run, method = "glm", num_trees = 200)
#' }
amb_log_params <- function(run_id, ...) {
  amb_cli_json(c("runs", "log-params", run_id, cli_kv(list(...), "params")))
  invisible(run_id)
}
