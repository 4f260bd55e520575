#' Record a parameter the stage chose, in result.json
#'
#' @inheritParams ctx_input_table
#' @param key Parameter name.
#' @param value A JSON-able value (scalar, vector or list).
#' @return `ctx`, invisibly.
#' @export
#' @examples
#' \dontrun{
#' ctx_log_param(stage_context(), "method", "glm")
#' }
ctx_log_param <- function(ctx, key, value) {
  state <- ctx_state(ctx)
  state$params[[key]] <- value
  invisible(ctx)
}
