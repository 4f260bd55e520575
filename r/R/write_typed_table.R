#' Write a typed table (CSV plus schema sidecar)
#'
#' Implements contract/SPEC.md section 3 byte for byte: UTF-8 without BOM, a
#' header row, `,` separator, `\n` line ends, RFC 4180 quoting, a missing
#' value as an empty unquoted field and an empty string as `""`; doubles as the
#' shortest decimal that reads back to the same value (15 to 17 significant
#' digits) with `NaN`, `Inf`, `-Inf` as text; booleans `true`/`false`;
#' timestamps `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` in UTC; factors as their labels
#' with the levels in the sidecar `<name>.schema.json`.
#'
#' Fields are formatted here and `data.table::fwrite()` only joins them
#' (`quote = FALSE`): fwrite alone writes doubles with 15 digits, NaN as
#' missing and the empty string unquoted, which the contract forbids.
#'
#' @param df A data frame.
#' @param path Path of the CSV file; the sidecar is written beside it.
#' @param schema A table schema (list) to write against: columns are taken by
#'   name in the schema's order and coerced losslessly; `NULL` infers it from
#'   `df` (every column nullable).
#' @return The schema written, invisibly.
#' @export
#' @examples
#' path <- tempfile(fileext = ".csv")
#' write_typed_table(data.frame(x = c(0.1, NaN, NA), s = c("", NA, "a,b")), path)
#' cat(readLines(path), sep = "\n")
write_typed_table <- function(df, path, schema = NULL) {
  df <- as.data.frame(df, stringsAsFactors = FALSE, optional = TRUE)
  if (is.null(schema)) {
    schema <- infer_table_schema(df)
  } else {
    df <- conform_to_schema(df, schema, path)
  }
  schema$row_count <- nrow(df)
  schema$contract_version <- schema$contract_version %||% 1L
  schema <- schema_for_json(schema)
  validate_document("table", json_parse(json_text(schema, pretty = FALSE)))
  fields <- lapply(schema$columns, function(col) encode_column(df[[col$name]], col))
  header <- csv_quote(vapply(schema$columns, function(col) enc2utf8(col$name), character(1)))
  names(fields) <- make.unique(paste0("V", seq_along(fields)))
  dir.create(dirname(path), recursive = TRUE, showWarnings = FALSE)
  write_fields(fields, header, path)
  json_write(schema, table_sidecar_path(path))
  invisible(schema)
}

write_fields <- function(fields, header, path) {
  con <- file(path, open = "wb")
  writeBin(charToRaw(paste0(paste(header, collapse = ","), "\n")), con)
  close(con)
  if (length(fields) && length(fields[[1]])) {
    data.table::fwrite(
      data.table::setDT(fields), path, append = TRUE, quote = FALSE, sep = ",",
      eol = "\n", na = "", col.names = FALSE, bom = FALSE, showProgress = FALSE
    )
  }
}

schema_for_json <- function(schema) {
  schema$columns <- lapply(schema$columns, function(col) {
    if (!is.null(col$levels)) col$levels <- I(as.character(unlist(col$levels)))
    col
  })
  if (!length(schema$columns)) schema$columns <- list()
  schema
}

conform_to_schema <- function(df, schema, path) {
  out <- lapply(schema$columns, function(col) {
    if (!col$name %in% names(df)) {
      amb_abort("contract.missing_column",
                paste0("Column '", col$name, "' of the schema is not in the data frame written to ", path, "."),
                "Add the column or drop it from the schema.", column = col$name)
    }
    x <- coerce_column(df[[col$name]], col, where = paste0(" (writing ", path, ")"))
    if (col$type == "category") {
      levels <- as.character(unlist(col$levels))
      bad <- which(!is.na(x) & !(as.character(x) %in% levels))
      if (length(bad)) {
        amb_abort("contract.type_mismatch",
                  paste0("Column '", col$name, "' holds '", as.character(x)[bad[1]],
                         "', not one of the schema's levels."),
                  "Add the level to the schema or recode the value.", column = col$name)
      }
      x <- factor(as.character(x), levels = levels)
    }
    if (isFALSE(col$nullable) && any(is.na(x) & !(is.double(x) & is.nan(x)))) {
      amb_abort("contract.type_mismatch",
                paste0("Column '", col$name, "' is not nullable but has missing values."),
                "Fill them or declare the column nullable.", column = col$name)
    }
    x
  })
  names(out) <- vapply(schema$columns, function(col) col$name, character(1))
  structure(out, class = "data.frame", row.names = .set_row_names(nrow(df)))
}
