#' Record a metric in result.json
#'
#' @inheritParams ctx_input_table
#' @param name Metric name.
#' @param value A number (NA, NaN and Inf are recorded as null).
#' @param step A non-negative integer step.
#' @return `ctx`, invisibly.
#' @export
#' @examples
#' \dontrun{
#' ctx_log_metric(stage_context(), "rmse", 0.42)
#' }
ctx_log_metric <- function(ctx, name, value, step = 0) {
  state <- ctx_state(ctx)
  value <- suppressWarnings(as.double(value))
  if (length(value) != 1L || !is.character(name) || length(name) != 1L || !nzchar(name)) {
    amb_abort("stage.failed", "ctx_log_metric() takes one name and one numeric value.",
              "Log each metric with its own call.")
  }
  if (length(step) != 1L || is.na(step) || step < 0 || step != trunc(step)) {
    amb_abort("stage.failed", paste0("Metric step must be an integer >= 0, got ", format(step), "."),
              "Pass step = 0, 1, 2, ...")
  }
  state$metrics[[length(state$metrics) + 1L]] <- list(
    name = name, value = if (is.finite(value)) value else NULL, step = as.integer(step)
  )
  invisible(ctx)
}
