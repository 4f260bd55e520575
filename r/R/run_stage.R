#' Run a stage under the ambidex contract
#'
#' Reads `context.json` (refusing a newer `contract_version` first), sets the
#' context's seed, then sources `script` into a fresh environment and calls its
#' `main(ctx)` when it defines one (top-level code may call [stage_context()]),
#' or runs a built-in stage (`"train"` or `"score"`). It then checks that every
#' declared output was written and writes `result.json` in `output_dir`.
#'
#' Warnings raised while the stage runs are not muffled (R still prints them
#' to stderr) and are also written, in order, as `result.json`'s `warnings`
#' (their messages; at most 100, then one line saying how many more).
#'
#' On error it writes `result.json` with `status: "error"` and
#' `error {code, message, hint}` (the code of an ambidex condition; a missing
#' package, R's `packageNotFoundError` from `library()`, `loadNamespace()` or
#' `pkg::fun`, is `stage.runtime_missing` naming it; else
#' `stage.failed`), prints the message and a traceback to stderr and, when
#' `exit` is `TRUE` and R is not interactive (Rscript), quits with status 1.
#' Embedded callers (rpy2) must pass `exit = FALSE`: the host process is never
#' quit and the status is returned.
#'
#' @param script Path of an R script, or `NULL` for a built-in.
#' @param builtin `"train"` or `"score"`, or `NULL`.
#' @param context Path of `context.json`.
#' @param exit Quit R with status 1 on failure (only when not interactive).
#' @return The exit status, invisibly: `0L` (ok) or `1L` (error), with the
#'   result document as attribute `"result"` (the rpy2 adapter reads the
#'   integer as the stage's exit code).
#' @export
#' @examples
#' \dontrun{
#' # what the orchestrator runs:
#' # Rscript --vanilla -e 'ambidex::run_stage("stages/features.R")'
#' run_stage(builtin = "train", context = "runs/<id>/train/context.json", exit = FALSE)
#' }
run_stage <- function(script = NULL, builtin = NULL, context = Sys.getenv("AMBIDEX_CONTEXT"),
                      exit = TRUE) {
  ctx <- NULL
  trace <- NULL
  warns <- character(0)
  old <- amb_state$ctx
  on.exit(amb_state$ctx <- old, add = TRUE)
  amb_state$ctx <- NULL
  error <- tryCatch(
    withCallingHandlers(
      {
        ctx <- load_context(context)
        amb_state$ctx <- ctx
        run_stage_body(ctx, script, builtin)
        check_declared_outputs(ctx)
        NULL
      },
      error = function(e) trace <<- stage_traceback(sys.calls()),
      # recorded, not muffled: R's own handling still prints the warning
      warning = function(w) warns <<- c(warns, paste(conditionMessage(w), collapse = "\n"))
    ),
    error = function(e) e
  )
  result <- stage_result(ctx, error, warns)
  out_dir <- stage_output_dir(ctx, context)
  if (!is.null(out_dir)) {
    dir.create(out_dir, recursive = TRUE, showWarnings = FALSE)
    json_write(result, file.path(out_dir, "result.json"))
  }
  if (is.null(error)) {
    return(invisible(structure(0L, result = result)))
  }
  report_stage_error(error, trace)
  if (isTRUE(exit) && !interactive()) quit(save = "no", status = 1L, runLast = FALSE)
  invisible(structure(1L, result = result))
}

run_stage_body <- function(ctx, script, builtin) {
  if (is.numeric(ctx$seed)) set.seed(ctx$seed)
  if (!is.null(builtin)) {
    fun <- switch(builtin, train = builtin_train, score = builtin_score, NULL)
    if (is.null(fun)) {
      amb_abort("stage.failed", paste0("No built-in stage '", builtin, "'."),
                "The R built-ins are 'train' and 'score'.")
    }
    return(fun(ctx))
  }
  if (is.null(script) || !file.exists(script)) {
    amb_abort("stage.failed", paste0("Stage script not found: ", script %||% "(none)", "."),
              "Paths are relative to the project root; check the stage's `script` in the pipeline config.")
  }
  env <- new.env(parent = globalenv())
  sys.source(script, envir = env, keep.source = FALSE, toplevel.env = env)
  main <- get0("main", envir = env, inherits = FALSE)
  if (is.function(main)) main(ctx)
  invisible()
}

check_declared_outputs <- function(ctx) {
  state <- ctx_state(ctx)
  for (name in names(ctx$outputs)) {
    out <- ctx$outputs[[name]]
    ok <- if (identical(out$kind, "model")) {
      file.exists(file.path(out$path, "model.json"))
    } else {
      file.exists(out$path) && file.exists(table_sidecar_path(out$path))
    }
    if (!ok) {
      amb_abort("stage.failed",
                paste0("The stage did not write its declared ", out$kind, " output '", name, "' at ", out$path, "."),
                if (identical(out$kind, "model")) "Write the model folder with its model.json." else
                  "Write it with ctx_write_table(ctx, name, df), which also writes the schema sidecar.")
    }
    state$outputs[[name]] <- list(kind = out$kind, path = out$path)
  }
}

stage_max_warnings <- 100L

stage_result <- function(ctx, error, warnings = character(0)) {
  state <- if (!is.null(ctx)) attr(ctx, "state") else new_stage_state()
  if (length(warnings) > stage_max_warnings) {
    more <- length(warnings) - stage_max_warnings
    warnings <- c(warnings[seq_len(stage_max_warnings)],
                  paste0("... and ", more, " more warning(s), not recorded"))
  }
  list(
    contract_version = 1L,
    status = if (is.null(error)) "ok" else "error",
    metrics = state$metrics,
    params = state$params,
    outputs = if (is.null(error)) state$outputs else json_object(),
    artifacts = state$artifacts,
    error = if (is.null(error)) NULL else amb_condition_fields(error),
    warnings = json_array(as.character(warnings))
  )
}

# Where result.json goes: the context's output_dir; when the context itself
# could not be read, the folder of context.json (the stage folder).
stage_output_dir <- function(ctx, context) {
  if (!is.null(ctx)) return(ctx$output_dir)
  raw <- tryCatch(jsonlite::fromJSON(context, simplifyVector = FALSE), error = function(e) NULL)
  dir <- if (is.list(raw) && is.character(raw$output_dir)) raw$output_dir else NULL
  dir %||% (if (nzchar(context)) dirname(context) else NULL)
}

# The frames between the stage body and the signalling machinery, one line each.
stage_traceback <- function(calls) {
  labels <- sub("\n.*$", "", utils::limitedLabels(calls))
  start <- utils::tail(grep("run_stage_body", labels, fixed = TRUE), 1L)
  if (length(start)) labels <- labels[-seq_len(start)]
  stop_at <- grep("cli::cli_abort|rlang::abort|signalCondition|^stop\\(|^\\(function \\(e\\)", labels)
  if (length(stop_at)) labels <- labels[seq_len(stop_at[1] - 1L)]
  labels
}

report_stage_error <- function(error, trace) {
  fields <- amb_condition_fields(error)
  lines <- c(paste0("ambidex stage failed [", fields$code, "]: ", fields$message),
             if (!is.null(fields$hint)) paste0("hint: ", fields$hint),
             if (length(trace)) c("traceback:", paste0("  ", utils::tail(trace, 15L))))
  cat(lines, sep = "\n", file = stderr())
}
