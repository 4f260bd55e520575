# The stage context: context.json parsed, plus a per-stage state environment
# (metrics, params, outputs and artifacts recorded for result.json). The list
# is copied by value but the environment is shared, so helpers called with
# any copy of `ctx` record into the same result.

amb_state <- new.env(parent = emptyenv())

new_stage_state <- function() {
  state <- new.env(parent = emptyenv())
  state$metrics <- list()
  state$params <- json_object()
  state$outputs <- json_object()
  state$artifacts <- list()
  state
}

load_context <- function(path) {
  if (!nzchar(path)) {
    amb_abort("stage.failed", "No context: AMBIDEX_CONTEXT is not set and no path was given.",
              "Run the stage through the orchestrator (ambidex run), or pass the path of a context.json.")
  }
  doc <- json_read(path)
  # The orchestrator validated context.json before writing it (AMBIDEX_VALIDATED=1), and validates
  # result.json when it reads it: a stage it started checks only the contract version.
  if (identical(Sys.getenv("AMBIDEX_VALIDATED"), "1")) {
    check_contract_version(doc, path)
  } else {
    validate_document("context", doc, schema_dir = contract_schema_dir())
  }
  ctx <- doc
  ctx$context_path <- normalizePath(path, mustWork = FALSE)
  attr(ctx, "state") <- new_stage_state()
  class(ctx) <- c("ambidex_context", "list")
  ctx
}

ctx_state <- function(ctx) {
  state <- attr(ctx, "state", exact = TRUE)
  if (!inherits(ctx, "ambidex_context") || !is.environment(state)) {
    amb_abort("stage.failed", "This is not a stage context.",
              "Use the `ctx` passed to main(ctx), or ambidex::stage_context().")
  }
  state
}

ctx_io <- function(ctx, side, name, kind = NULL) {
  ctx_state(ctx)
  entries <- ctx[[side]]
  entry <- entries[[name]]
  if (is.null(entry)) {
    amb_abort("stage.failed",
              paste0("The stage has no ", sub("s$", "", side), " named '", name, "'."),
              paste0("Declared ", side, ": ", paste(names(entries), collapse = ", ") %|empty|% "none",
                     ". Declare it in the pipeline config."))
  }
  if (!is.null(kind) && !identical(entry$kind, kind)) {
    amb_abort("stage.failed",
              paste0("The ", sub("s$", "", side), " '", name, "' is a ", entry$kind, ", not a ", kind, "."),
              "Use the ctx_* helper of its kind (ctx_input_table / ctx_input_model).")
  }
  entry
}

`%|empty|%` <- function(x, y) if (!length(x) || identical(x, "")) y else x

#' @export
print.ambidex_context <- function(x, ...) {
  cat("<ambidex stage context> ", x$pipeline, "/", x$stage, " (run ", x$run_id, ")\n", sep = "")
  cat("  inputs: ", paste(names(x$inputs), collapse = ", "), "\n", sep = "")
  cat("  outputs: ", paste(names(x$outputs), collapse = ", "), "\n", sep = "")
  invisible(x)
}
