#' Read a table input of the stage
#'
#' @param ctx The stage context (`main(ctx)` or [stage_context()]).
#' @param name The input's name in the pipeline config.
#' @return A data.frame typed per its schema (see [read_typed_table()]).
#' @export
#' @examples
#' \dontrun{
#' df <- ctx_input_table(stage_context(), "data")
#' }
ctx_input_table <- function(ctx, name) {
  input <- ctx_io(ctx, "inputs", name, kind = "table")
  read_typed_table(input$path, schema = input$schema)
}
