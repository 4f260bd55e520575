#' Write a table output of the stage
#'
#' @inheritParams ctx_output_path
#' @param df A data frame.
#' @param schema Optional table schema to write against (see
#'   [write_typed_table()]).
#' @return The path written, invisibly.
#' @export
#' @examples
#' \dontrun{
#' ctx_write_table(stage_context(), "predictions", data.frame(id = 1:3))
#' }
ctx_write_table <- function(ctx, name, df, schema = NULL) {
  ctx_io(ctx, "outputs", name, kind = "table")
  path <- ctx_output_path(ctx, name)
  write_typed_table(df, path, schema = schema)
  invisible(path)
}
