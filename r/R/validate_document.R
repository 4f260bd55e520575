#' Validate a contract document against its JSON Schema
#'
#' Checks the `contract_version` first (a newer version fails with
#' `contract.version_unsupported` and an upgrade hint), then interprets
#' `<schema_dir>/<kind>.v1.json` (a JSON Schema subset, see `utils_schema.R`).
#' Unknown fields are kept and allowed unless the schema says otherwise.
#'
#' @param kind One of `"context"`, `"result"`, `"model"`, `"table"`.
#' @param doc The parsed document (a list as read with
#'   `jsonlite::fromJSON(simplifyVector = FALSE)`), or a path to a JSON file.
#' @param schema_dir Folder holding the schemas; by default
#'   `AMBIDEX_CONTRACT_DIR` or the copy shipped with the package.
#' @return `doc` (parsed), invisibly. Signals `ambidex_contract_invalid_document`
#'   (`ambidex_contract_invalid_manifest` for a model), or
#'   `ambidex_contract_version_unsupported`.
#' @export
#' @examples
#' validate_document("table", list(contract_version = 1, row_count = 0,
#'   columns = list()))
#' try(validate_document("table", list(contract_version = 2)))
validate_document <- function(kind, doc, schema_dir = contract_schema_dir()) {
  kinds <- c("context", "result", "model", "table")
  if (!(is.character(kind) && length(kind) == 1L && kind %in% kinds)) {
    # base R rather than rlang::arg_match: loading rlang costs ~50 ms of every stage that validates
    stop("`kind` must be one of ", paste0('"', kinds, '"', collapse = ", "), ", not ",
         deparse(kind, nlines = 1L), ".", call. = FALSE)
  }
  code <- if (kind == "model") "contract.invalid_manifest" else "contract.invalid_document"
  where <- paste0("The ", kind, " document")
  if (is.character(doc) && length(doc) == 1L && is.null(names(doc))) {
    where <- doc
    doc <- json_read(doc, code = code)
  }
  check_contract_version(doc, where)
  errs <- schema_errors(doc, load_contract_schema(kind, schema_dir))
  if (length(errs)) {
    shown <- utils::head(errs, 5L)
    more <- if (length(errs) > 5L) paste0(" (and ", length(errs) - 5L, " more)") else ""
    amb_abort(
      code,
      paste0(where, " does not match schemas/", kind, ".v1.json: ",
             paste(shown, collapse = "; "), more, "."),
      "Fix the fields named above; contract/SPEC.md describes each one.",
      problems = errs
    )
  }
  invisible(doc)
}

check_contract_version <- function(doc, where = "The document") {
  v <- if (is.list(doc) && !is.null(names(doc))) doc[["contract_version"]] else NULL
  if (is.numeric(v) && length(v) == 1L && !is.na(v) && v > 1) {
    amb_abort(
      "contract.version_unsupported",
      paste0(where, " was written with contract_version ", v,
             "; this R package implements version 1."),
      "Upgrade: reinstall the R package from r/ (R CMD INSTALL r) and `pip install -U ambidex`."
    )
  }
  invisible(doc)
}
