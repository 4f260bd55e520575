# Validation metrics of the built-in train stage. Pure functions of vectors.

#' Rank-based AUC (Mann-Whitney), ties get the average rank
#' @param score Scores, higher meaning more likely positive.
#' @param is_pos Logical: the row's label is the positive class.
#' @noRd
metric_auc <- function(score, is_pos) {
  keep <- !is.na(score) & !is.na(is_pos)
  score <- score[keep]
  is_pos <- is_pos[keep]
  n_pos <- sum(is_pos)
  n_neg <- sum(!is_pos)
  if (n_pos == 0L || n_neg == 0L) return(NA_real_)
  r <- rank(score, ties.method = "average")
  (sum(r[is_pos]) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
}

#' Log loss of the probabilities given to the true class (clipped to 1e-15)
#' @noRd
metric_log_loss <- function(p_true) {
  p <- pmin(pmax(p_true, 1e-15), 1 - 1e-15)
  -mean(log(p), na.rm = TRUE)
}

metric_regression <- function(pred, y) {
  err <- pred - y
  ss_tot <- sum((y - mean(y))^2)
  list(
    rmse = sqrt(mean(err^2)),
    mae = mean(abs(err)),
    r2 = if (ss_tot > 0) 1 - sum(err^2) / ss_tot else NA_real_
  )
}

#' Classification metrics from a probability matrix (columns = levels)
#' @noRd
metric_classification <- function(prob, y, positive = NULL) {
  levels <- colnames(prob)
  idx <- match(as.character(y), levels)
  p_true <- prob[cbind(seq_along(idx), idx)]
  pred <- levels[max.col(prob, ties.method = "first")]
  auc <- if (length(levels) == 2L) {
    metric_auc(prob[, positive], as.character(y) == positive)
  } else {
    # macro average of one-vs-rest AUCs over the classes present
    aucs <- vapply(levels, function(l) metric_auc(prob[, l], as.character(y) == l), numeric(1))
    if (all(is.na(aucs))) NA_real_ else mean(aucs, na.rm = TRUE)
  }
  list(auc = auc, accuracy = mean(pred == as.character(y)), log_loss = metric_log_loss(p_true))
}

#' Stage loss used by permutation importance: log loss or mean squared error
#' @noRd
model_loss <- function(model, prepped, y) {
  out <- model_predict_prepped(model, prepped)
  if (model$task == "regression") return(mean((out$prediction - y)^2))
  idx <- match(as.character(y), model$target$levels)
  metric_log_loss(out$prob[cbind(seq_along(idx), idx)])
}

#' Permutation importance per input column, normalised to sum to 1
#'
#' One permutation per column of the validation rows (set.seed(seed) first);
#' the increase in loss is clipped at 0 and w = imp / sum(imp), uniform when
#' every increase is <= 0.
#' @noRd
permutation_importance <- function(model, valid, y, seed) {
  set.seed(seed)
  base <- model_loss(model, prep_features(valid, model), y)
  imp <- vapply(model$features, function(f) {
    shuffled <- valid
    shuffled[[f]] <- shuffled[[f]][sample.int(nrow(valid))]
    model_loss(model, prep_features(shuffled, model), y) - base
  }, numeric(1))
  imp[!is.finite(imp)] <- 0
  imp <- pmax(imp, 0)
  w <- if (sum(imp) > 0) imp / sum(imp) else rep(1 / length(imp), length(imp))
  stats::setNames(as.list(w), model$features)
}
