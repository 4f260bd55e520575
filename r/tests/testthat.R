library(testthat)
library(ambidex)

test_check("ambidex")
