#' Where the stage must write an output
#'
#' For a table output this is the CSV path (its sidecar goes beside it; prefer
#' [ctx_write_table()]); for a model output, the folder to create.
#'
#' @inheritParams ctx_input_table
#' @param name The output's name in the pipeline config.
#' @return A path.
#' @export
#' @examples
#' \dontrun{
#' dir.create(ctx_output_path(stage_context(), "model"))
#' }
ctx_output_path <- function(ctx, name) {
  output <- ctx_io(ctx, "outputs", name)
  dir.create(dirname(output$path), recursive = TRUE, showWarnings = FALSE)
  state <- ctx_state(ctx)
  state$outputs[[name]] <- list(kind = output$kind, path = output$path)
  output$path
}
