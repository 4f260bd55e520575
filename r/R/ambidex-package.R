#' ambidex: R stages, typed tables and models for the ambidex contract
#'
#' The R side of ambidex (contract/SPEC.md): [run_stage()] runs a stage,
#' [stage_context()] and the `ctx_*()` helpers read inputs and record outputs,
#' [read_typed_table()] / [write_typed_table()] move data across the language
#' boundary, [predict_model()] scores R model folders, [validate_document()]
#' checks contract documents, and the `amb_*()` functions wrap the `ambidex`
#' command line for tracking and the registry.
#'
#' Errors are conditions of class `ambidex_<code>` (dots as underscores),
#' `ambidex_<family>_error` and `ambidex_error`, with fields `code` and `hint`.
#' @keywords internal
"_PACKAGE"

utils::globalVariables(".y")
