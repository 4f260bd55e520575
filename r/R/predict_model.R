#' Score a data frame with an R model folder
#'
#' Loads the folder through [load_model_payload()] (hashes checked first),
#' matches `df` against the signature by column name (missing column ->
#' `contract.missing_column`, extra columns ignored, lossless coercions only,
#' unseen level -> `contract.unseen_level`) and predicts. Missing feature values
#' are imputed as at training (median / mode stored in the model).
#'
#' @param folder A model folder, or a payload already loaded with
#'   [load_model_payload()].
#' @param df A data frame.
#' @return `data.frame(prediction, score)`, one row per row of `df`, in order:
#'   `prediction` a factor of the target levels (double for regression),
#'   `score` P(positive) for binary classification, the top class probability
#'   for multiclass, the prediction for regression.
#' @export
#' @examples
#' \dontrun{
#' predict_model("contract/golden/r/model", read_typed_table("contract/golden/r/input.csv"))
#' }
predict_model <- function(folder, df) {
  model <- if (is.character(folder)) load_model_payload(folder) else folder
  manifest <- attr(model, "manifest")
  conformed <- conform_input(as.data.frame(df, stringsAsFactors = FALSE, optional = TRUE),
                             manifest$signature)
  model_predict(model, conformed$df)
}
