# Scoring input checks (contract/SPEC.md section 4.1), by column name.

#' Match a data frame against signature inputs
#'
#' Missing column -> contract.missing_column (before anything is computed);
#' extra columns are ignored and returned; order does not matter; values are
#' coerced losslessly (coerce_column) or fail with contract.type_mismatch; a
#' category value outside the signature's levels fails with
#' contract.unseen_level naming column and level.
#' @noRd
conform_input <- function(df, signature) {
  inputs <- signature$inputs
  wanted <- vapply(inputs, function(col) col$name, character(1))
  missing <- setdiff(wanted, names(df))
  if (length(missing)) {
    amb_abort("contract.missing_column",
              paste0("Input column '", missing[1], "' is missing",
                     if (length(missing) > 1L) paste0(" (also: ", paste(missing[-1], collapse = ", "), ")") else "",
                     "; the model's signature requires it."),
              "Add the column to the scoring input; columns are matched by name.",
              column = missing[1])
  }
  out <- lapply(inputs, function(col) {
    x <- coerce_column(df[[col$name]], col)
    if (col$type == "category") {
      levels <- as.character(unlist(col$levels))
      values <- as.character(x)
      unseen <- which(!is.na(values) & !(values %in% levels))
      if (length(unseen)) {
        amb_abort("contract.unseen_level",
                  paste0("Column '", col$name, "' holds level '", values[unseen[1]],
                         "', which the model never saw (levels: ", paste(levels, collapse = ", "), ")."),
                  "Recode the value to a known level, or retrain on data that has it (unseen_level policy: error).",
                  column = col$name, level = values[unseen[1]])
      }
      x <- factor(values, levels = levels)
    }
    x
  })
  names(out) <- wanted
  list(df = structure(out, class = "data.frame", row.names = .set_row_names(nrow(df))),
       extra = setdiff(names(df), wanted))
}

#' Predict a conformed frame: data.frame(prediction, score), one row per row
#' @noRd
model_predict <- function(model, df) {
  if (inherits(model, "ambidex_model")) {
    pred <- model_predict_prepped(model, prep_features(df, model))
    return(data.frame(prediction = pred$prediction, score = pred$score))
  }
  if (is.list(model) && is.function(model$predict)) {
    out <- model$predict(df)
    if (!is.data.frame(out) || nrow(out) != nrow(df) || !all(c("prediction", "score") %in% names(out))) {
      amb_abort("stage.failed", "The payload's predict(df) must return data.frame(prediction, score) with one row per input row.",
                "Fix the predict function saved in model.rds.")
    }
    return(out[c("prediction", "score")])
  }
  amb_abort("artifact.format_not_allowed",
            "model.rds holds neither an ambidex built-in model nor a list with a predict(df) function.",
            "Train with the built-in train stage, or save list(predict = function(df) ...) as the payload.")
}

#' A golden input object (JSON) as a one-row data frame of R values
#' @noRd
golden_input_frame <- function(input) {
  cols <- lapply(input, function(v) if (is.null(v)) NA else v)
  structure(cols, class = "data.frame", row.names = .set_row_names(1L))
}
