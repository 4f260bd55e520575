#' The folder of a model input of the stage
#'
#' @inheritParams ctx_input_table
#' @return The path of the model folder (load it with [predict_model()] or
#'   [load_model_payload()]).
#' @export
#' @examples
#' \dontrun{
#' predict_model(ctx_input_model(stage_context(), "model"), df)
#' }
ctx_input_model <- function(ctx, name) {
  input <- ctx_io(ctx, "inputs", name, kind = "model")
  if (!dir.exists(input$path)) {
    amb_abort("contract.invalid_manifest", paste0("Model input '", name, "' is not a folder: ", input$path, "."),
              "Check that the model version is registered and READY.")
  }
  input$path
}
