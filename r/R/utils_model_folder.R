# The model folder (contract/SPEC.md section 4): model.rds + model.json.

model_library <- function(model) if (model$method == "ranger") "ranger" else "stats"

model_signature <- function(model) {
  outputs <- list(
    if (model$task == "regression") {
      list(name = "prediction", type = "double", nullable = TRUE)
    } else {
      list(name = "prediction", type = "category", nullable = TRUE, levels = I(model$target$levels))
    },
    list(name = "score", type = "double", nullable = TRUE)
  )
  inputs <- lapply(model$info, function(inf) {
    col <- inf$column
    if (!is.null(col$levels)) col$levels <- I(col$levels)
    col
  })
  list(inputs = unname(inputs), outputs = outputs, unseen_level = "error")
}

# A data row as a golden input object: JSON-ready scalars, NA as null.
golden_row <- function(row, features) {
  out <- lapply(features, function(f) {
    v <- row[[f]]
    if (is.na(v) && !(is.double(v) && is.nan(v))) return(NULL)
    if (is.factor(v)) return(as.character(v))
    if (inherits(v, "POSIXct")) return(fmt_timestamp_utc(v))
    v
  })
  names(out) <- features
  out
}

golden_expected <- function(pred, i) {
  p <- pred$prediction[i]
  list(prediction = if (is.factor(p)) as.character(p) else p, score = pred$score[i])
}

#' Golden cases: the first golden_n validation rows with their predictions,
#' and one negative case per contract error the signature can raise.
#' @noRd
model_golden <- function(model, valid, golden_n = 5L) {
  rows <- valid[seq_len(min(golden_n, nrow(valid))), , drop = FALSE]
  pred <- model_predict_prepped(model, prep_features(rows, model))
  positive <- lapply(seq_len(nrow(rows)), function(i) {
    list(input = golden_row(rows[i, , drop = FALSE], model$features), expected = golden_expected(pred, i))
  })
  base <- golden_row(valid[1, , drop = FALSE], model$features)
  types <- vapply(model$info, function(inf) inf$column$type, character(1))
  negative <- list(list(input = base[-1], error = "contract.missing_column"))
  if (length(base) == 1L) negative[[1]]$input <- json_object()
  if (any(types == "double")) {
    bad <- base
    bad[[names(types)[types == "double"][1]]] <- "not-a-number"
    negative[[length(negative) + 1L]] <- list(input = bad, error = "contract.type_mismatch")
  }
  if (any(types == "category")) {
    bad <- base
    bad[[names(types)[types == "category"][1]]] <- "__unseen__"
    negative[[length(negative) + 1L]] <- list(input = bad, error = "contract.unseen_level")
  }
  list(tolerance = 1e-9, positive = positive, negative = negative)
}

file_entry <- function(path) {
  list(sha256 = digest::digest(file = path, algo = "sha256"), size = as.integer(file.size(path)))
}

model_name_from <- function(x) {
  x <- tolower(gsub("[^A-Za-z0-9_-]+", "_", x %||% "model"))
  if (!grepl("^[a-z]", x)) x <- paste0("m", x)
  substr(x, 1L, 63L)
}

#' Write model.rds and model.json into `folder`
#' @noRd
write_model_folder <- function(trained, folder, name, golden_n = 5L, lineage = NULL,
                               resources = NULL, created = Sys.time()) {
  model <- trained$model
  dir.create(folder, recursive = TRUE, showWarnings = FALSE)
  payload <- file.path(folder, "model.rds")
  saveRDS(model, payload, version = 3)
  lib <- model_library(model)
  r_version <- paste(R.version$major, R.version$minor, sep = ".")
  packages <- list(ambidex = model$sdk_version)
  packages[[lib]] <- as.character(utils::packageVersion(lib))
  resources <- resources %||% list()
  resources$payload_bytes <- as.integer(file.size(payload))
  manifest <- list(
    contract_version = 1L,
    name = model_name_from(name),
    version = NULL,
    created = fmt_timestamp_utc(as.POSIXct(trunc(as.numeric(created)), origin = "1970-01-01", tz = "UTC")),
    producer = list(language = "r", language_version = r_version, library = lib,
                    library_version = packages[[lib]], sdk_version = model$sdk_version),
    runtime = list(language = "r", payload = "model.rds", format = "rds",
                   predict = "ambidex::predict_model", packages = packages,
                   min_language_version = "4.2.0"),
    task = model$task,
    target = drop_null(list(name = model$target$name, type = model$target$type,
                            levels = if (!is.null(model$target$levels)) I(model$target$levels),
                            positive = model$target$positive)),
    signature = model_signature(model),
    feature_importance = list(method = "permutation", values = trained$importance),
    metrics = drop_null(lapply(trained$metrics, function(v) if (is.finite(v)) as.double(v))),
    golden = model_golden(model, trained$valid, golden_n),
    lineage = lineage,
    resources = resources,
    files = list(model.rds = file_entry(payload))
  )
  if (!length(manifest$metrics)) manifest$metrics <- json_object()
  validate_document("model", json_parse(json_text(manifest)))
  json_write(manifest, file.path(folder, "model.json"))
  invisible(manifest)
}

drop_null <- function(x) x[!vapply(x, is.null, logical(1))]
