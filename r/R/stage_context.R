#' The context of the running stage
#'
#' Returns the context `run_stage()` is running with, or reads the
#' `context.json` named by `AMBIDEX_CONTEXT` (so top-level script code can call
#' it). Use it with the `ctx_*()` helpers; metrics, params and outputs recorded
#' through them end up in `result.json`.
#'
#' @param path Path of `context.json`; defaults to `AMBIDEX_CONTEXT`.
#' @return A list of class `ambidex_context` with the fields of
#'   contract/SPEC.md section 2.1 (`run_id`, `params`, `inputs`, `outputs`,
#'   `seed`, ...).
#' @export
#' @examples
#' \dontrun{
#' ctx <- stage_context()
#' df <- ctx_input_table(ctx, "data")
#' ctx_log_metric(ctx, "rows", nrow(df))
#' }
stage_context <- function(path = Sys.getenv("AMBIDEX_CONTEXT")) {
  current <- amb_state$ctx
  if (!is.null(current) && (!nzchar(path) ||
      identical(normalizePath(path, mustWork = FALSE), current$context_path))) {
    return(current)
  }
  ctx <- load_context(path)
  amb_state$ctx <- ctx
  ctx
}
