#' Keep an extra file of the stage (listed in result.json artifacts)
#'
#' @inheritParams ctx_input_table
#' @param path Path of the file, relative to the stage's `output_dir`.
#' @param kind A free label such as `"plot"` or `"report"`.
#' @return `ctx`, invisibly.
#' @export
#' @examples
#' \dontrun{
#' ctx_log_artifact(stage_context(), "residuals.png", "plot")
#' }
ctx_log_artifact <- function(ctx, path, kind = "file") {
  state <- ctx_state(ctx)
  if (grepl("^/", path) || any(strsplit(path, "[/\\\\]")[[1]] == "..")) {
    amb_abort("stage.failed", paste0("Artifact path '", path, "' must be relative to output_dir without '..'."),
              "Write the file under ctx$output_dir and pass its relative path.")
  }
  state$artifacts[[length(state$artifacts) + 1L]] <- list(path = path, kind = kind)
  invisible(ctx)
}
