#' Compare two data sets for drift
#'
#' Runs `ambidex drift compare REFERENCE CURRENT [--importance FILE] [--columns a,b] --json`:
#' the statistics and verdicts of drift.md, computed once in the orchestrator.
#' @param reference,current Paths to CSV (typed or plain) or Parquet files, or `"sql:TABLE"`.
#' @param importance Path to a JSON file of feature weights (or a model.json), or `NULL` for equal weights.
#' @param columns Character vector of columns to compare, or `NULL` for all.
#' @return A data.frame, one row per feature sorted by impact (`w * psi`), with the dataset
#'   verdict in the attributes `status`, `dataset_drift`, `weighted_psi` and `drifted_importance_share`.
#' @export
#' @examples
#' \dontrun{
#' d <- amb_drift_compare("train.csv", "june.csv", importance = "model.json")
#' head(d[, c("feature", "status", "impact_psi")])
#' attr(d, "dataset_drift")
#' }
amb_drift_compare <- function(reference, current, importance = NULL, columns = NULL) {
  args <- c("drift", "compare", reference, current,
            if (!is.null(importance)) c("--importance", importance),
            if (length(columns)) c("--columns", paste(columns, collapse = ",")))
  doc <- amb_cli_json(args)
  drift_features_df(doc, c("status", "dataset_drift", "weighted_psi", "drifted_importance_share",
                           "uniform_importance"))
}

# The features of a drift document as a data.frame, with scalar verdict fields as attributes.
drift_features_df <- function(doc, keep) {
  df <- records_to_df(doc$features %||% list())
  for (k in keep) attr(df, k) <- doc[[k]]
  df
}
