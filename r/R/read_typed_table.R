#' Read a typed table (CSV plus schema sidecar)
#'
#' Implements contract/SPEC.md section 3. Every field is read as text with
#' `data.table::fread()` (an empty unquoted field is missing, `""` is the
#' empty string) and converted per its contract type, so a value that does not
#' parse fails with `contract.invalid_table` naming the file, line and column.
#' Integers become R integers when all fit in 32 bits, doubles when all
#' |x| <= 2^53, and otherwise fail with `contract.int64_overflow` naming the
#' column. Categories become factors with the sidecar's levels in order;
#' timestamps POSIXct in UTC.
#'
#' @param path Path of the CSV file.
#' @param schema The table schema as a list; by default the sidecar
#'   `<name>.schema.json` beside `<name>.csv`.
#' @return A data.frame.
#' @export
#' @examples
#' path <- tempfile(fileext = ".csv")
#' write_typed_table(data.frame(id = 1:2, plan = factor(c("b", NA), c("a", "b"))), path)
#' read_typed_table(path)
read_typed_table <- function(path, schema = NULL) {
  if (is.null(schema)) schema <- json_read(table_sidecar_path(path))
  validate_document("table", schema)
  cols <- schema$columns
  names_expected <- vapply(cols, function(c) c$name, character(1))
  if (!file.exists(path)) {
    amb_abort("contract.invalid_table", paste0("No table file ", path, "."),
              "Check the input path; the stage that writes it may have failed.", file = path)
  }
  dt <- fread_text(path, length(cols))
  if (!identical(names(dt), names_expected)) {
    amb_abort("contract.invalid_table",
              paste0(path, " line 1: header [", paste(names(dt), collapse = ","),
                     "] differs from the schema's columns [", paste(names_expected, collapse = ","), "]."),
              "Write the CSV and its sidecar together (write_typed_table()).", file = path, line = 1L)
  }
  if (!is.null(schema$row_count) && nrow(dt) != schema$row_count) {
    amb_abort("contract.invalid_table",
              paste0(path, ": ", nrow(dt), " rows but the sidecar says row_count ", schema$row_count, "."),
              "The file was truncated or edited; write it again.", file = path)
  }
  out <- lapply(cols, function(col) decode_checked(dt[[col$name]], col, path))
  names(out) <- names_expected
  structure(out, class = "data.frame", row.names = .set_row_names(nrow(dt)))
}

fread_text <- function(path, ncol) {
  if (file.size(path) == 0L) {
    return(stats::setNames(list(), character()))
  }
  dt <- withCallingHandlers(
    tryCatch(
      data.table::fread(
        path, sep = ",", quote = "\"", header = TRUE, colClasses = "character",
        na.strings = "", strip.white = FALSE, fill = FALSE, blank.lines.skip = FALSE,
        encoding = "UTF-8", data.table = FALSE, showProgress = FALSE, check.names = FALSE
      ),
      error = function(e) {
        amb_abort("contract.invalid_table", paste0(path, " is not a valid CSV: ", conditionMessage(e)),
                  "Write it with write_typed_table() or the Python SDK.", file = path)
      }
    ),
    warning = function(w) {
      amb_abort("contract.invalid_table", paste0(path, " is not a valid CSV: ", conditionMessage(w)),
                "Write it with write_typed_table() or the Python SDK.", file = path)
    }
  )
  # fread returns an all-missing column as logical even with colClasses.
  for (j in seq_along(dt)) if (!is.character(dt[[j]])) dt[[j]] <- as.character(dt[[j]])
  dt
}

.set_row_names <- function(n) if (n > 0L) c(NA_integer_, -n) else integer()

decode_checked <- function(s, col, path) {
  dec <- decode_column(s, col)
  if (length(dec$bad)) {
    i <- dec$bad[1]
    amb_abort("contract.invalid_table",
              paste0(path, " line ", i + 1L, ", column '", col$name, "': '", s[i],
                     "' is not a valid ", col$type,
                     if (col$type == "category") " (not one of the sidecar's levels)" else "", "."),
              "See contract/SPEC.md section 3 for the text of each type.",
              file = path, line = i + 1L, column = col$name)
  }
  if (length(dec$overflow)) {
    i <- dec$overflow[1]
    amb_abort("contract.int64_overflow",
              paste0("Column '", col$name, "' of ", path, " holds ", s[i],
                     " (line ", i + 1L, "), beyond 2^53: R cannot hold it exactly."),
              "Store such identifiers as string columns.", file = path, column = col$name)
  }
  missing <- is.na(dec$value) & !(is.double(dec$value) & is.nan(dec$value))
  if (isFALSE(col$nullable) && any(missing)) {
    i <- which(missing)[1]
    amb_abort("contract.type_mismatch",
              paste0("Column '", col$name, "' of ", path, " is not nullable but line ",
                     i + 1L, " is missing."),
              "Fill the value, or declare the column nullable in the schema.",
              file = path, column = col$name)
  }
  dec$value
}
