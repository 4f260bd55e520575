# The built-in "train" stage: pure training (train_model) and the model object.
#
# Params (the same names as the Python built-in):
#   target (required); features (default: every column but target and exclude);
#   exclude; task ("auto": a factor/logical/character target with 2 levels is
#   binary_classification, more is multiclass_classification, numeric is
#   regression); positive (default: the SECOND level of the target, glm's
#   convention: P(second level) is what binomial glm models); method ("glm"
#   for binary and regression, "ranger" default for multiclass, which glm does
#   not fit); num_trees (200); num_threads (1: ranger is reproducible for a
#   seed only at a fixed thread count); validation_fraction (0.2, a random
#   split drawn with set.seed(seed)); golden_n (5).
#
# Missing values: rows with a missing target are dropped. Missing features are
# imputed with the training split's median (numeric, timestamp) or mode
# (category, string, boolean); the values are stored in the model so that
# prediction imputes the same way.
#
# Features are renamed .f1, .f2, ... inside the fitted model so any column name
# works in a formula. Category, string and boolean features become factors with
# the levels observed in the training table; timestamps become seconds.

builtin_param <- function(params, name, default = NULL) {
  v <- params[[name]]
  if (is.null(v)) default else if (is.list(v)) unlist(v) else v
}

train_model <- function(df, params, seed = 0L) {
  target <- builtin_param(params, "target")
  if (is.null(target) || !target %in% names(df)) {
    amb_abort("contract.missing_column",
              paste0("The train stage needs params.target naming a column; got '", target %||% "", "'."),
              paste0("Columns: ", paste(names(df), collapse = ", "), "."), column = target %||% "")
  }
  exclude <- builtin_param(params, "exclude", character())
  features <- builtin_param(params, "features", setdiff(names(df), c(target, exclude)))
  missing <- setdiff(features, names(df))
  if (length(missing)) {
    amb_abort("contract.missing_column", paste0("Feature column '", missing[1], "' is not in the training table."),
              "Fix params.features or the input table.", column = missing[1])
  }
  df <- df[!is.na(df[[target]]), , drop = FALSE]
  target_info <- describe_target(df[[target]], target, params)
  method <- builtin_param(params, "method",
                          if (target_info$task == "multiclass_classification") "ranger" else "glm")
  method <- rlang::arg_match0(method, c("glm", "ranger"), arg_nm = "params.method")
  if (method == "glm" && target_info$task == "multiclass_classification") {
    amb_abort("stage.failed", "method 'glm' cannot fit a multiclass target.",
              "Set params.method: ranger.")
  }
  n <- nrow(df)
  frac <- builtin_param(params, "validation_fraction", 0.2)
  n_valid <- min(n - 2L, max(1L, round(n * frac)))
  if (n_valid < 1L) {
    amb_abort("stage.failed", paste0("Only ", n, " rows with a target: too few to train and validate."),
              "Train on at least 3 rows.")
  }
  set.seed(seed)
  valid_idx <- sort(sample.int(n, n_valid))
  train <- df[-valid_idx, , drop = FALSE]
  valid <- df[valid_idx, , drop = FALSE]

  model <- new_model_spec(df, train, features, target_info, method)
  y_train <- target_vector(train[[target]], target_info)
  model$fit <- fit_model(model, prep_features(train, model), y_train, params, seed)
  y_valid <- target_vector(valid[[target]], target_info)
  pred <- model_predict_prepped(model, prep_features(valid, model))
  metrics <- if (model$task == "regression") {
    metric_regression(pred$prediction, y_valid)
  } else {
    metric_classification(pred$prob, y_valid, model$target$positive)
  }
  metrics <- c(metrics, list(n_train = nrow(train), n_valid = nrow(valid)))
  importance <- permutation_importance(model, valid, y_valid, seed)
  list(model = model, metrics = metrics, importance = importance, valid = valid)
}

describe_target <- function(y, name, params) {
  task <- builtin_param(params, "task", "auto")
  if (task == "auto") {
    task <- if (is.numeric(y) && !is.factor(y)) "regression" else {
      n_levels <- length(target_levels(y))
      if (n_levels == 2L) "binary_classification" else if (n_levels > 2L) "multiclass_classification" else {
        amb_abort("stage.failed", paste0("Target '", name, "' has a single value: nothing to learn."),
                  "Check the training window.")
      }
    }
  }
  if (task == "regression") return(list(task = task, name = name, type = "double"))
  levels <- target_levels(y)
  positive <- builtin_param(params, "positive", if (length(levels) == 2L) levels[2] else NULL)
  if (!is.null(positive) && !positive %in% levels) {
    amb_abort("stage.failed", paste0("params.positive '", positive, "' is not a level of '", name, "'."),
              paste0("Levels: ", paste(levels, collapse = ", "), "."))
  }
  list(task = task, name = name, type = "category", levels = levels,
       positive = if (task == "binary_classification") positive else NULL)
}

# Levels observed, in factor order (factor), false/true (logical), sorted (text).
target_levels <- function(y) {
  if (is.factor(y)) return(levels(droplevels(y)))
  if (is.logical(y)) return(c("false", "true")[c(any(!y, na.rm = TRUE), any(y, na.rm = TRUE))])
  sort(unique(as.character(y[!is.na(y)])))
}

target_vector <- function(y, info) {
  if (info$task == "regression") return(as.double(y))
  if (is.logical(y)) y <- ifelse(y, "true", "false")
  factor(as.character(y), levels = info$levels)
}

feature_kind <- function(x) {
  if (is.factor(x) || is.character(x) || is.logical(x)) "factor" else "numeric"
}

as_feature_text <- function(x) {
  if (is.logical(x)) ifelse(x, "true", "false") else as.character(x)
}

new_model_spec <- function(df, train, features, target_info, method) {
  info <- lapply(features, function(f) {
    x <- df[[f]]
    type <- r_column_type(x)
    kind <- feature_kind(x)
    col <- list(name = f, type = type, nullable = TRUE)
    xt <- train[[f]]
    if (kind == "factor") {
      levels <- if (is.factor(x)) levels(droplevels(x)) else if (is.logical(x)) c("false", "true") else
        sort(unique(x[!is.na(x)]))
      if (type == "string") col$type <- "category"
      if (type != "boolean") col$levels <- levels
      tab <- table(factor(as_feature_text(xt), levels = levels))
      impute <- if (sum(tab) > 0) names(tab)[which.max(tab)] else levels[1]
    } else {
      impute <- stats::median(as.double(xt), na.rm = TRUE)
      if (is.na(impute)) impute <- 0
      levels <- NULL
    }
    list(column = col, kind = kind, levels = levels, impute = impute)
  })
  names(info) <- features
  structure(list(
    sdk_version = as.character(utils::packageVersion("ambidex")),
    method = method, task = target_info$task,
    target = target_info[c("name", "type", "levels", "positive")],
    features = features, info = info, internal = paste0(".f", seq_along(features))
  ), class = "ambidex_model")
}

#' Model-ready frame: internal names, factors with training levels, imputed
#' @noRd
prep_features <- function(df, model) {
  out <- lapply(model$features, function(f) {
    inf <- model$info[[f]]
    x <- df[[f]]
    if (inf$kind == "factor") {
      x <- as_feature_text(x)
      x[is.na(x)] <- inf$impute
      factor(x, levels = inf$levels)
    } else {
      x <- as.double(x)
      x[is.na(x)] <- inf$impute
      x
    }
  })
  names(out) <- model$internal
  structure(out, class = "data.frame", row.names = .set_row_names(nrow(df)))
}

fit_model <- function(model, x, y, params, seed) {
  # A constant column cannot enter glm's contrasts: it is left out of the fit
  # (it stays a required input of the signature, with importance 0).
  varying <- vapply(x, function(col) length(unique(col)) > 1L, logical(1))
  if (model$method == "ranger") {
    rlang::check_installed("ranger")
    return(ranger::ranger(
      x = x, y = y, num.trees = builtin_param(params, "num_trees", 200),
      probability = model$task != "regression", seed = seed,
      num.threads = builtin_param(params, "num_threads", 1L)
    ))
  }
  family <- if (model$task == "regression") stats::gaussian() else stats::binomial()
  y01 <- if (model$task == "regression") y else as.integer(as.character(y) == model$target$positive)
  data <- x[, varying, drop = FALSE]
  data$.y <- y01
  fit <- suppressWarnings(stats::glm(.y ~ ., data = data, family = family))
  tt <- stats::delete.response(stats::terms(fit))
  # the formula's environment would drag the training data into model.rds
  attr(tt, ".Environment") <- baseenv()
  list(coef = stats::coef(fit), terms = tt,
       xlevels = fit$xlevels, used = names(x)[varying])
}

#' Predictions from a prepared frame: prediction, score and (classification) prob
#' @noRd
model_predict_prepped <- function(model, x) {
  if (model$method == "ranger") {
    p <- stats::predict(model$fit, data = x, num.threads = 1L)$predictions
    if (model$task == "regression") return(list(prediction = as.double(p), score = as.double(p)))
    if (is.null(dim(p))) p <- matrix(p, nrow = nrow(x), dimnames = list(NULL, names(p)))
    levels <- model$target$levels
    prob <- matrix(0, nrow = nrow(x), ncol = length(levels), dimnames = list(NULL, levels))
    common <- intersect(colnames(p), levels)
    prob[, common] <- p[, common, drop = FALSE]
  } else {
    mm <- stats::model.matrix(model$fit$terms, x[, model$fit$used, drop = FALSE],
                              xlev = model$fit$xlevels)
    beta <- model$fit$coef
    beta[is.na(beta)] <- 0
    eta <- drop(mm %*% beta[colnames(mm)])
    if (model$task == "regression") return(list(prediction = eta, score = eta))
    p <- stats::plogis(eta)
    levels <- model$target$levels
    neg <- setdiff(levels, model$target$positive)
    prob <- matrix(0, nrow = length(p), ncol = 2L, dimnames = list(NULL, levels))
    prob[, model$target$positive] <- p
    prob[, neg] <- 1 - p
  }
  classify(prob, model)
}

classify <- function(prob, model) {
  levels <- model$target$levels
  if (model$task == "binary_classification") {
    # P(positive) >= 0.5 predicts the positive level (ties go to it)
    score <- prob[, model$target$positive]
    neg <- setdiff(levels, model$target$positive)
    pred <- ifelse(score >= 0.5, model$target$positive, neg)
  } else {
    best <- max.col(prob, ties.method = "first")
    pred <- levels[best]
    score <- prob[cbind(seq_len(nrow(prob)), best)]
  }
  list(prediction = factor(pred, levels = levels), score = unname(score), prob = prob)
}
