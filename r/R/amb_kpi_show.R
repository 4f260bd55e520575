#' List stored KPIs
#'
#' Runs `ambidex kpi show [--model M] [--metric K] --json`: labelled KPIs with analytic
#' standard errors, and label-free estimates (`is_estimated = TRUE`, CBPE or DLE-lite),
#' which never promote a model by themselves.
#' @param model Model name or `"name:version"`, or `NULL` for all.
#' @param metric Metric name (`"roc_auc"`, `"accuracy"`, `"log_loss"`, `"rmse"`, `"mae"`, ...), or `NULL`.
#' @param last At most this many rows, newest first.
#' @return A data.frame, one row per (window, metric).
#' @export
#' @examples
#' \dontrun{
#' k <- amb_kpi_show("churn_py", metric = "roc_auc")
#' k[, c("window_start", "value", "se", "is_estimated")]
#' }
amb_kpi_show <- function(model = NULL, metric = NULL, last = 50L) {
  args <- c("kpi", "show", if (!is.null(model)) c("--model", model),
            if (!is.null(metric)) c("--metric", metric), "--last", as.character(as.integer(last)))
  records_to_df(amb_cli_json(args))
}
