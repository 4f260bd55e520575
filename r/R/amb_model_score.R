#' Score a typed table with a registered model, in the model's own runtime
#'
#' Runs `ambidex models score NAME[:VERSION] --input CSV --output CSV --json`. A Python model is
#' scored by Python and an R model by R, whichever language calls: this is how an R session uses
#' a colleague's scikit-learn model without touching Python.
#' @param name Model name.
#' @param input Path of a typed CSV (with its `.schema.json` sidecar), e.g. from [write_typed_table()].
#' @param output Path for the predictions (a typed CSV and sidecar are written).
#' @param version Version number, or `NULL` for the latest READY version.
#' @param keep Input columns copied to the output (e.g. a key).
#' @return The predictions as a data frame (read with [read_typed_table()]).
#' @export
#' @examples
#' \dontrun{
#' write_typed_table(new_customers, "new.csv")
#' preds <- amb_model_score("churn_py", "new.csv", "pred.csv", keep = "customer_id")
#' }
amb_model_score <- function(name, input, output, version = NULL, keep = NULL) {
  ref <- if (is.null(version)) name else paste0(name, ":", version)
  args <- c("models", "score", ref, "--input", normalizePath(input, mustWork = TRUE), "--output", output)
  for (k in keep) args <- c(args, "--keep", k)
  amb_cli_json(args)
  read_typed_table(output)
}
