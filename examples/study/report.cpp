#include "report.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <set>
#include <sstream>

namespace tram::study {

namespace fs = std::filesystem;

double t_quantile_95(int64_t df) {
  static const double table[] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                                 2.201,  2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                                 2.080,  2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042};
  if (df < 1) return 0.0;
  if (df <= 30) return table[df - 1];
  return 1.960 + 2.4 / static_cast<double>(df);  // within 0.002 of the exact quantile above 30
}

Summary summarize(const std::vector<double>& values) {
  Summary s;
  s.n = static_cast<int64_t>(values.size());
  if (values.empty()) return s;
  for (double v : values) s.mean += v / static_cast<double>(values.size());
  if (values.size() < 2) return s;
  double squares = 0.0;
  for (double v : values) squares += (v - s.mean) * (v - s.mean);
  const double sd = std::sqrt(squares / static_cast<double>(values.size() - 1));
  s.ci95 = t_quantile_95(s.n - 1) * sd / std::sqrt(static_cast<double>(s.n));
  return s;
}

std::string Table::best(const std::string& column) const {
  std::string winner;
  double best_mean = 0.0;
  for (const auto& row : rows) {
    auto found = cells.find(row);
    if (found == cells.end() || !found->second.count(column)) continue;
    const double mean = found->second.at(column).mean;
    const bool better = spec.higher_is_better ? mean > best_mean : mean < best_mean;
    if (winner.empty() || better) {
      winner = row;
      best_mean = mean;
    }
  }
  return winner;
}

Table build_table(const TableSpec& spec, const std::vector<RunRecord>& records,
                  const std::vector<std::string>& method_order) {
  Table table;
  table.spec = spec;
  table.columns.push_back(spec.in_distribution);
  table.columns.insert(table.columns.end(), spec.out_of_distribution.begin(), spec.out_of_distribution.end());
  table.columns.push_back(kZeroShotAverage);
  // Every experiment's analysis ends with the method's cost: forward passes
  // per step and the wall time of a run (LookSAM's and interval's point).
  table.analysis_columns = spec.analysis;
  table.analysis_columns.insert(table.analysis_columns.end(), {kPassesColumn, kSecondsColumn});

  std::vector<std::string> order;
  std::set<std::string> present;
  for (const auto& record : records) present.insert(record.method);
  for (const auto& method : method_order) {
    if (present.count(method)) order.push_back(method);
  }
  for (const auto& record : records) {
    if (std::find(order.begin(), order.end(), record.method) == order.end()) order.push_back(record.method);
  }
  table.rows = order;

  for (const auto& method : order) {
    std::map<std::string, std::vector<double>> values, analysis;
    for (const auto& record : records) {
      if (record.method != method) continue;
      double zero_shot = 0.0;
      for (const auto& column : spec.out_of_distribution) zero_shot += record.metric(column);
      values[spec.in_distribution].push_back(record.metric(spec.in_distribution));
      for (const auto& column : spec.out_of_distribution) values[column].push_back(record.metric(column));
      values[kZeroShotAverage].push_back(zero_shot / static_cast<double>(spec.out_of_distribution.size()));
      for (const auto& column : spec.analysis) {
        auto found = record.analysis.find(column);
        if (found != record.analysis.end()) analysis[column].push_back(found->second);
      }
      if (auto passes = record.analysis.find("passes"); passes != record.analysis.end()) {
        analysis[kPassesColumn].push_back(passes->second);
        analysis[kSecondsColumn].push_back(record.seconds);
      }
    }
    for (const auto& [column, list] : values) table.cells[method][column] = summarize(list);
    for (const auto& [column, list] : analysis) table.analysis[method][column] = summarize(list);
  }
  return table;
}

namespace {

std::string format_cell(const Summary& s, int precision) {
  std::ostringstream text;
  text << std::fixed << std::setprecision(precision) << s.mean;
  if (s.n >= 2) text << " ± " << s.ci95;
  return text.str();
}

// Analysis values range from 1e-6 (radii) to 100 (sharpness): 3 significant digits.
std::string format_general(const Summary& s) {
  std::ostringstream text;
  text << std::setprecision(3) << s.mean;
  // A constant (a fixed radius) has a CI of rounding noise: not shown.
  if (s.n >= 2 && s.ci95 > 1e-9 * std::max(1.0, std::abs(s.mean))) text << " ± " << s.ci95;
  return text.str();
}

int precision_of(const Table& table) { return table.spec.higher_is_better ? 1 : 2; }

std::string seeds_of(const std::map<std::string, Summary>& row) {
  int64_t n = 0;
  for (const auto& [column, summary] : row) n = std::max(n, summary.n);
  return std::to_string(n);
}

}  // namespace

std::string to_markdown(const Table& table) {
  std::ostringstream md;
  md << "| method | seeds |";
  for (const auto& column : table.columns) md << " " << column << " |";
  md << "\n|---|---:|";
  for (size_t i = 0; i < table.columns.size(); ++i) md << "---:|";
  md << "\n";
  std::map<std::string, std::string> best;
  for (const auto& column : table.columns) best[column] = table.best(column);
  for (const auto& row : table.rows) {
    const auto& cells = table.cells.at(row);
    md << "| " << row_label(row) << " | " << seeds_of(cells) << " |";
    for (const auto& column : table.columns) {
      auto found = cells.find(column);
      if (found == cells.end()) {
        md << " – |";
        continue;
      }
      const std::string text = format_cell(found->second, precision_of(table));
      md << " " << (best[column] == row ? "**" + text + "**" : text) << " |";
    }
    md << "\n";
  }
  return md.str();
}

std::string analysis_markdown(const Table& table) {
  if (table.analysis_columns.empty()) return "";
  std::ostringstream md;
  md << "| method |";
  for (const auto& column : table.analysis_columns) md << " " << column << " |";
  md << "\n|---|";
  for (size_t i = 0; i < table.analysis_columns.size(); ++i) md << "---:|";
  md << "\n";
  for (const auto& row : table.rows) {
    auto found = table.analysis.find(row);
    if (found == table.analysis.end()) continue;
    md << "| " << row_label(row) << " |";
    for (const auto& column : table.analysis_columns) {
      auto cell = found->second.find(column);
      md << " " << (cell == found->second.end() ? "–" : format_general(cell->second))
         << " |";
    }
    md << "\n";
  }
  return md.str();
}

void write_csv(const Table& table, const fs::path& file) {
  std::ofstream out(file);
  out << "method,column,mean,ci95,n\n" << std::setprecision(10);
  auto write = [&](const std::map<std::string, std::map<std::string, Summary>>& cells,
                   const std::vector<std::string>& columns) {
    for (const auto& row : table.rows) {
      auto found = cells.find(row);
      if (found == cells.end()) continue;
      for (const auto& column : columns) {
        auto cell = found->second.find(column);
        if (cell == found->second.end()) continue;
        out << row << "," << column << "," << cell->second.mean << "," << cell->second.ci95 << "," << cell->second.n
            << "\n";
      }
    }
  };
  write(table.cells, table.columns);
  write(table.analysis, table.analysis_columns);
  if (!out) throw std::runtime_error("cannot write " + file.string());
}

std::string row_label(const std::string& method) {
  const std::string suffix = std::string(":") + kReleasedCode;
  if (method.size() > suffix.size() && method.compare(method.size() - suffix.size(), suffix.size(), suffix) == 0) {
    return method.substr(0, method.size() - suffix.size()) + " (released code)";
  }
  return method;
}

namespace {

bool have_gnuplot() { return std::system("command -v gnuplot > /dev/null 2>&1") == 0; }

std::string quoted(const std::string& text) { return "\"" + text + "\""; }

}  // namespace

std::vector<fs::path> draw_plots(const Table& table, const std::string& baseline, const fs::path& prefix) {
  if (!have_gnuplot()) {
    std::cerr << "note: gnuplot is not installed (Debian package gnuplot-nox); no plots drawn\n";
    return {};
  }
  std::vector<fs::path> drawn;
  const std::string id = table.spec.in_distribution;
  const std::string metric = table.spec.metric;

  // 1. In-distribution vs zero-shot, one point per method, with a
  //    least-squares line over the fine-tuned methods.
  {
    const fs::path data = prefix.string() + "-id-vs-zs.dat";
    std::ofstream out(data);
    out << std::setprecision(10);
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    int n = 0;
    double x_low = 1e300, x_high = -1e300, y_low = 1e300, y_high = -1e300;
    for (const auto& row : table.rows) {
      const auto& cells = table.cells.at(row);
      const auto& x = cells.at(id);
      const auto& y = cells.at(kZeroShotAverage);
      // One block per method (gnuplot's "index"), so each gets its own key entry.
      out << x.mean << " " << y.mean << " " << x.ci95 << " " << y.ci95 << "\n\n\n";
      x_low = std::min(x_low, x.mean), x_high = std::max(x_high, x.mean);
      y_low = std::min(y_low, y.mean), y_high = std::max(y_high, y.mean);
      if (row == "pre-trained") continue;
      sx += x.mean, sy += y.mean, sxx += x.mean * x.mean, sxy += x.mean * y.mean, ++n;
    }
    out.close();
    const double denominator = n * sxx - sx * sx;
    const bool fit = n >= 3 && std::abs(denominator) > 1e-12;
    const double slope = fit ? (n * sxy - sx * sy) / denominator : 0.0;
    const double intercept = fit ? (sy - slope * sx) / n : 0.0;
    const fs::path png = prefix.string() + "-id-vs-zs.png";
    std::ofstream gp(prefix.string() + "-id-vs-zs.gp");
    gp << "set terminal pngcairo size 1200,700 font 'Sans,11'\n"
       << "set output " << quoted(png.string()) << "\n"
       << "set title " << quoted(table.spec.title) << " font 'Sans,10'\n"
       << "set xlabel " << quoted("in-distribution " + metric + " (" + id + ")") << "\n"
       << "set ylabel " << quoted("zero-shot average " + metric) << "\n"
       << "set key outside right top vertical font 'Sans,9' spacing 1.1\nset grid\n";
    // The axes frame the means (wide confidence intervals are clipped, not
    // allowed to squeeze the points together).
    auto pad = [](double low, double high) { return std::max(0.15 * (high - low), 1e-3 * std::abs(high) + 1e-9); };
    gp << std::setprecision(10) << "set xrange [" << x_low - pad(x_low, x_high) << ":" << x_high + pad(x_low, x_high)
       << "]\nset yrange [" << y_low - pad(y_low, y_high) << ":" << y_high + pad(y_low, y_high) << "]\n";
    if (fit) gp << "f(x) = " << std::setprecision(10) << slope << " * x + " << intercept << "\n";
    // Twenty methods' names as point labels overlap; each point is numbered
    // in the key instead, with a marker of its own.
    gp << "plot ";
    for (size_t i = 0; i < table.rows.size(); ++i) {
      gp << (i ? ", " : "") << quoted(data.string()) << " index " << i << " using 1:2:3:4 with xyerrorbars pt "
         << (5 + i % 9) << " ps 1.3 lc " << (i + 1) << " title " << quoted(std::to_string(i + 1) + "  " + row_label(table.rows[i]))
         << ", " << quoted(data.string()) << " index " << i << " using 1:2:(\"" << i + 1
         << "\") with labels offset 0.9,0.7 font 'Sans,8' tc lt " << (i + 1) << " notitle";
    }
    if (fit) gp << ", f(x) with lines dt 2 lc rgb '#d62728' title 'least squares, fine-tuned methods'";
    gp << "\n";
    gp.close();
    if (std::system(("gnuplot " + quoted(prefix.string() + "-id-vs-zs.gp")).c_str()) == 0) drawn.push_back(png);
  }

  // 2. Every column, each method's mean minus the baseline's.
  if (table.cells.count(baseline)) {
    const fs::path data = prefix.string() + "-columns.dat";
    std::ofstream out(data);
    out << std::setprecision(10) << "column";
    std::vector<std::string> methods;
    for (const auto& row : table.rows) {
      if (row != baseline && row != "pre-trained") methods.push_back(row);
    }
    for (const auto& method : methods) out << " " << quoted(row_label(method));
    out << "\n";
    for (const auto& column : table.columns) {
      out << quoted(column);
      const double base = table.cells.at(baseline).at(column).mean;
      for (const auto& method : methods) out << " " << table.cells.at(method).at(column).mean - base;
      out << "\n";
    }
    out.close();
    const fs::path png = prefix.string() + "-columns.png";
    std::ofstream gp(prefix.string() + "-columns.gp");
    gp << "set terminal pngcairo size 1400,600 font 'Sans,11'\n"
       << "set output " << quoted(png.string()) << "\n"
       << "set title " << quoted(table.spec.title + "\\nmean of each method minus " + baseline + " (" +
                                 (table.spec.higher_is_better ? "above 0: better" : "below 0: better") + ")")
       << " font 'Sans,10'\n"
       << "set ylabel " << quoted(metric + " difference") << "\n"
       << "set style data histograms\nset style histogram clustered gap 2\nset style fill solid 0.85 border -1\n"
       << "set boxwidth 0.9\nset grid ytics\nset xtics rotate by -30 scale 0\nset xzeroaxis lt -1\n"
       << "set offsets 0, 0, graph 0.05, graph 0.05\n"
       << "set key outside right top vertical font 'Sans,9'\n"
       << "plot for [i=2:" << methods.size() + 1 << "] " << quoted(data.string())
       << " using i:xtic(1) title columnheader(i)\n";
    gp.close();
    if (std::system(("gnuplot " + quoted(prefix.string() + "-columns.gp")).c_str()) == 0) drawn.push_back(png);
  }
  return drawn;
}

}  // namespace tram::study
