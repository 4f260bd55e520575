#' Log metrics of a run
#'
#' Runs `ambidex runs log-metrics RUN NAME=VALUE ... --step N --json`.
#' Doubles are passed as the shortest text that reads back exactly.
#' @param run_id The run id.
#' @param ... Named numbers (`auc = 0.81`), or one named list.
#' @param step Integer step, >= 0.
#' @return The run id, invisibly.
#' @export
#' @examples
#' \dontrun{
#' amb_log_metrics(run, rmse = 0.42, step = 3)
#' }
amb_log_metrics <- function(run_id, ..., step = 0) {
  values <- list(...)
  if (length(values) == 1L && is.list(values[[1]]) && is.null(names(values))) values <- values[[1]]
  values <- lapply(values, as.double)
  amb_cli_json(c("runs", "log-metrics", run_id, cli_kv(values, "metrics"),
                 "--step", format(as.integer(step))))
  invisible(run_id)
}
