// The study's tables and plots: mean and 95% confidence interval over seeds
// for every method and column, the best mean of each column marked, written
// as Markdown and CSV; plots drawn with gnuplot.
#pragma once

#include "study.h"

#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace tram::study {

// Mean, and the half-width of the 95% confidence interval of the mean
// (Student's t with n - 1 degrees of freedom; 0 when n < 2).
struct Summary {
  double mean = 0.0;
  double ci95 = 0.0;
  int64_t n = 0;
};
Summary summarize(const std::vector<double>& values);
// The two-sided 95% quantile of Student's t distribution.
double t_quantile_95(int64_t degrees_of_freedom);

constexpr const char* kZeroShotAverage = "ZS avg";
// The cost columns every analysis table ends with.
constexpr const char* kPassesColumn = "passes/step";
constexpr const char* kSecondsColumn = "s/run";

// The options that reproduce the released TRAM code exactly (its ascent
// formula, its KL reduction, T = |w|), as a study method suffix:
// "tram-prev:" + kReleasedCode.
constexpr const char* kReleasedCode = "formula=released;reduction=legacy;eta=0";
// How a method reads in tables and plots: its spec, except that the released
// code's options read "(released code)".
std::string row_label(const std::string& method);

struct Table {
  TableSpec spec;
  std::vector<std::string> rows;     // methods, in the order given
  std::vector<std::string> columns;  // in-distribution, out-of-distribution..., kZeroShotAverage
  std::map<std::string, std::map<std::string, Summary>> cells;  // row -> column -> summary
  std::vector<std::string> analysis_columns;
  std::map<std::string, std::map<std::string, Summary>> analysis;  // row -> analysis column -> summary

  // The row with the best mean in `column` (direction from spec); "" if none.
  std::string best(const std::string& column) const;
};

// Groups records by method (in `method_order`, then any other in order of
// appearance) and summarises every column over seeds. A run's zero-shot
// average is the mean of its out-of-distribution columns.
Table build_table(const TableSpec& spec, const std::vector<RunRecord>& records,
                  const std::vector<std::string>& method_order);

std::string to_markdown(const Table& table);
std::string analysis_markdown(const Table& table);  // "" without analysis columns
void write_csv(const Table& table, const std::filesystem::path& file);

// Draws `<prefix>-id-vs-zs.png` (each method's in-distribution vs zero-shot
// mean with 95% CIs and a least-squares trend line, as the paper's Figure 2)
// and `<prefix>-columns.png` (each column's mean relative to `baseline`'s,
// per method). Returns the files drawn; empty (with a note on stderr) when
// gnuplot is not installed.
std::vector<std::filesystem::path> draw_plots(const Table& table, const std::string& baseline,
                                              const std::filesystem::path& prefix);

}  // namespace tram::study
