# Conditions: the one place where ambidex errors are built.
#
# Every error is a classed condition:
#   c("ambidex_<code with dots as underscores>", "ambidex_<family>_error", "ambidex_error")
# e.g. contract.missing_column -> c("ambidex_contract_missing_column",
# "ambidex_contract_error", "ambidex_error"). The condition carries `code`
# (the stable dotted code of contract/SPEC.md section 5), `hint` (what to do
# next), `exit_code` and `amb_message` (the message without cli's line wrapping,
# for result.json).

# Exit codes of contract/SPEC.md section 5 (families default below).
amb_exit_codes <- c(
  contract = 3L, artifact = 1L, stage = 1L, usage = 2L, config = 2L,
  registry = 1L, data = 1L, check = 4L, lock = 75L
)

amb_exit_code <- function(code) {
  family <- sub("\\..*$", "", code)
  if (identical(code, "stage.runtime_missing")) {
    return(2L)
  }
  if (identical(code, "lock.held")) {
    return(75L)
  }
  unname(if (family %in% names(amb_exit_codes)) amb_exit_codes[[family]] else 1L)
}

#' The condition class of an error code
#'
#' @param code A dotted error code such as `"contract.missing_column"`.
#' @return The class name, e.g. `"ambidex_contract_missing_column"`.
#' @noRd
amb_code_class <- function(code) {
  paste0("ambidex_", gsub("[^A-Za-z0-9]+", "_", code))
}

amb_family_class <- function(code) {
  paste0("ambidex_", sub("\\..*$", "", code), "_error")
}

#' Signal an ambidex error
#'
#' @param code Dotted error code (contract/SPEC.md section 5).
#' @param message What happened, with the value received (plain text: it is
#'   inserted verbatim, braces are not interpolated).
#' @param hint What to do next, or `NULL`.
#' @param ... Extra fields stored in the condition (e.g. `column`, `file`).
#' @param exit_code Override of the exit code (the CLI envelope carries one).
#' @param call,parent Passed to [cli::cli_abort()].
#' @noRd
amb_abort <- function(code, message, hint = NULL, ..., exit_code = NULL,
                      parent = NULL, call = NULL) {
  message <- paste(message, collapse = " ")
  hint <- if (length(hint)) paste(hint, collapse = " ") else NULL
  bullets <- c("{message}", if (!is.null(hint)) c(i = "{hint}"))
  cli::cli_abort(
    bullets,
    class = unique(c(amb_code_class(code), amb_family_class(code), "ambidex_error")),
    code = code,
    hint = hint,
    amb_message = message,
    exit_code = exit_code %||% amb_exit_code(code),
    ...,
    parent = parent,
    call = call
  )
}

#' The code, message and hint of any condition, for result.json
#'
#' ambidex conditions give their own code; R's `packageNotFoundError` (a
#' package that is not installed, R >= 4.0) is `stage.runtime_missing` naming
#' the package; anything else is `stage.failed`.
#' @noRd
amb_condition_fields <- function(cnd) {
  if (inherits(cnd, "packageNotFoundError") && !inherits(cnd, "ambidex_error")) {
    return(amb_missing_package_fields(cnd))
  }
  code <- cnd$code
  if (!is.character(code) || length(code) != 1L) {
    code <- "stage.failed"
  }
  message <- cnd$amb_message %||% conditionMessage(cnd)
  hint <- cnd$hint
  if (!inherits(cnd, "ambidex_error")) {
    hint <- "Read the stage's stderr.log for the R traceback."
  }
  list(code = code, message = paste(message, collapse = "\n"), hint = hint)
}

# A missing R package: stage.runtime_missing, naming it, with how to install it.
amb_missing_package_fields <- function(cnd) {
  pkg <- cnd$package
  if (!is.character(pkg) || length(pkg) != 1L || !nzchar(pkg)) {
    pkg <- sub("^.*package called .(.+).\\s*$", "\\1", conditionMessage(cnd))
  }
  list(
    code = "stage.runtime_missing",
    message = paste0("The stage needs R package '", pkg, "', which is not installed (",
                     paste(conditionMessage(cnd), collapse = " "), ")."),
    hint = paste0("Install it: apt-get install r-cran-", tolower(pkg),
                  " (or install.packages(\"", pkg, "\")), then run the stage again.")
  )
}

`%||%` <- function(x, y) if (is.null(x)) y else x
