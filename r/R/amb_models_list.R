#' List registered models
#'
#' Runs `ambidex models list --json`.
#' @return A data.frame, one row per model (list columns for nested fields).
#' @export
#' @examples
#' \dontrun{
#' amb_models_list()
#' }
amb_models_list <- function() {
  records_to_df(amb_cli_json(c("models", "list")))
}
