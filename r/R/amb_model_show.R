#' Show a model version
#'
#' Runs `ambidex models show NAME[:VERSION] --json`.
#' @param name Model name.
#' @param version Version number, or `NULL` for the latest.
#' @return The parsed JSON document (a list).
#' @export
#' @examples
#' \dontrun{
#' amb_model_show("churn", 3)$status
#' }
amb_model_show <- function(name, version = NULL) {
  ref <- if (is.null(version)) name else paste0(name, ":", version)
  amb_cli_json(c("models", "show", ref))
}
