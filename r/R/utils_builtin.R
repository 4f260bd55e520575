# The built-in stages run by run_stage(builtin = "train" | "score").

io_of_kind <- function(entries, kind, preferred) {
  names <- names(entries)[vapply(entries, function(e) identical(e$kind, kind), logical(1))]
  if (preferred %in% names) return(preferred)
  if (length(names) == 1L) return(names)
  amb_abort("stage.failed",
            paste0("Cannot tell which ", kind, " to use: expected one named '", preferred, "'."),
            paste0("Name it '", preferred, "' in the pipeline config."))
}

builtin_train <- function(ctx) {
  params <- ctx$params
  data_name <- io_of_kind(ctx$inputs, "table", "data")
  model_name <- io_of_kind(ctx$outputs, "model", "model")
  t0 <- proc.time()
  df <- ctx_input_table(ctx, data_name)
  trained <- train_model(df, params, seed = ctx$seed %||% 0L)
  elapsed <- proc.time() - t0
  folder <- ctx_output_path(ctx, model_name)
  lineage <- list(run_id = ctx$run_id, stage = ctx$stage, data_version = NULL,
                  window = ctx$window, git_commit = NULL, git_dirty = NULL, config_hash = NULL)
  resources <- list(train_wall_seconds = unname(elapsed[["elapsed"]]),
                    train_cpu_seconds = unname(elapsed[["user.self"]] + elapsed[["sys.self"]]),
                    peak_rss_bytes = NULL)
  write_model_folder(trained, folder,
                     name = ctx$outputs[[model_name]]$name %||% params$model_name %||% ctx$pipeline,
                     golden_n = builtin_param(params, "golden_n", 5L),
                     lineage = lineage, resources = resources)
  for (m in names(trained$metrics)) ctx_log_metric(ctx, m, trained$metrics[[m]])
  ctx_log_param(ctx, "method", trained$model$method)
  ctx_log_param(ctx, "task", trained$model$task)
  ctx_log_param(ctx, "features", I(trained$model$features))
  invisible(trained)
}

builtin_score <- function(ctx) {
  params <- ctx$params
  data_name <- io_of_kind(ctx$inputs, "table", "data")
  model_input <- io_of_kind(ctx$inputs, "model", "model")
  out_name <- io_of_kind(ctx$outputs, "table", "predictions")
  folder <- ctx_input_model(ctx, model_input)
  df <- ctx_input_table(ctx, data_name)
  # the input is checked against the signature before the model's packages load (ranger takes ~0.8 s):
  # a refused input (a smoke test's negative case, say) fails at once; the bytes are verified first
  manifest <- verified_manifest(folder)
  conformed <- conform_input(df, manifest$signature)
  model <- load_verified_payload(folder, manifest)
  keep <- builtin_param(params, "keep", character())
  scored <- score_table(model, df, keep = keep,
                        chunk_size = builtin_param(params, "chunk_size", 100000L), conformed = conformed)
  ctx_write_table(ctx, out_name, scored$predictions, schema = scored$schema)
  ctx_log_metric(ctx, "extra_columns", length(scored$extra))
  ctx_log_metric(ctx, "n_rows", nrow(df))
  if (length(scored$extra)) ctx_log_param(ctx, "extra_columns", I(scored$extra))
  invisible(scored)
}

#' Score a whole table in chunks; nothing is returned (or written) unless every
#' signature column is present and every value conforms.
#' @noRd
score_table <- function(model, df, keep = character(), chunk_size = 100000L, conformed = NULL) {
  manifest <- attr(model, "manifest")
  missing_keep <- setdiff(keep, names(df))
  if (length(missing_keep)) {
    amb_abort("contract.missing_column", paste0("Column '", missing_keep[1], "' of params.keep is not in the input."),
              "Fix params.keep.", column = missing_keep[1])
  }
  if (is.null(conformed)) conformed <- conform_input(df, manifest$signature)
  n <- nrow(df)
  starts <- seq(1L, max(n, 1L), by = max(1L, as.integer(chunk_size)))
  parts <- lapply(starts, function(s) {
    rows <- seq.int(s, min(n, s + chunk_size - 1L))
    if (!n) rows <- integer()
    model_predict(model, conformed$df[rows, , drop = FALSE])
  })
  pred <- do.call(rbind, parts)
  out <- cbind(df[, keep, drop = FALSE], pred)
  schema_cols <- c(
    lapply(keep, function(k) infer_table_schema(df[, k, drop = FALSE])$columns[[1]]),
    manifest$signature$outputs
  )
  list(predictions = out, extra = conformed$extra,
       schema = list(contract_version = 1L, row_count = nrow(out), columns = schema_cols))
}
