// cpp_impute: imputes the empty cells of a CSV with a TorchScript imputer.
//
//   cpp_impute LIBRARY MODEL IN.csv OUT.csv [--seed N]
//
// LIBRARY  the notmiwae_fast operator library (python -c "import notmiwae_fast as m;
//          print(m.library_path())"); pass "-" for a pure-PyTorch export (fused=False)
// MODEL    a file written by notmiwae_fast.export.to_torchscript
// IN.csv   a header row, then rows of numbers; an empty cell (or NaN) is missing
// OUT.csv  the same table with the missing cells imputed (never IN.csv itself)
// --seed   seeds torch's generator, so the result equals Python's
//          torch.manual_seed(N); module(x, mask)
#include <dlfcn.h>
#include <torch/script.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

std::vector<std::string> split(const std::string& line) {
  std::vector<std::string> cells;
  std::string cell;
  std::stringstream stream(line);
  while (std::getline(stream, cell, ',')) cells.push_back(cell);
  if (!line.empty() && line.back() == ',') cells.emplace_back();
  return cells;
}

struct Table {
  std::vector<std::string> header;
  std::vector<float> values;  // row-major, NaN where missing
  int64_t rows = 0;
};

Table read_csv(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  Table table;
  std::string line;
  if (!std::getline(in, line)) throw std::runtime_error(path + " is empty");
  table.header = split(line);
  const size_t width = table.header.size();
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    std::vector<std::string> cells = split(line);
    if (cells.size() != width)
      throw std::runtime_error(path + ": row " + std::to_string(table.rows + 1) + " has " +
                               std::to_string(cells.size()) + " cells; the header has " +
                               std::to_string(width));
    for (const std::string& cell : cells) {
      if (cell.empty() || cell == "nan" || cell == "NaN") {
        table.values.push_back(NAN);
      } else {
        char* end = nullptr;
        const float value = std::strtof(cell.c_str(), &end);
        if (end != cell.c_str() + cell.size())
          throw std::runtime_error(path + ": not a number: '" + cell + "'");
        table.values.push_back(value);
      }
    }
    ++table.rows;
  }
  return table;
}

void write_csv(const std::string& path, const Table& table, const torch::Tensor& values) {
  std::ofstream out(path);
  if (!out) throw std::runtime_error("cannot write " + path);
  for (size_t j = 0; j < table.header.size(); ++j) out << (j ? "," : "") << table.header[j];
  out << "\n";
  const auto v = values.accessor<float, 2>();
  char buffer[32];
  for (int64_t i = 0; i < values.size(0); ++i) {
    for (int64_t j = 0; j < values.size(1); ++j) {
      std::snprintf(buffer, sizeof(buffer), "%.9g", v[i][j]);
      out << (j ? "," : "") << buffer;
    }
    out << "\n";
  }
}

// The last non-empty line of an error message: where TorchScript puts the error that
// the exported module raised ("builtins.ValueError: ..."), after its traceback.
std::string last_line(const std::string& message) {
  std::stringstream stream(message);
  std::string line, last;
  while (std::getline(stream, line))
    if (!line.empty()) last = line;
  const std::string prefix = "builtins.";
  if (last.rfind(prefix, 0) == 0) last = last.substr(prefix.size());
  return last;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5 && argc != 7) {
    std::cerr << "usage: cpp_impute LIBRARY MODEL IN.csv OUT.csv [--seed N]\n";
    return 2;
  }
  const std::string library = argv[1], model_path = argv[2], in_path = argv[3], out_path = argv[4];
  try {
    if (argc == 7) {
      if (std::string(argv[5]) != "--seed")
        throw std::runtime_error("unknown option " + std::string(argv[5]));
      torch::manual_seed(std::stoull(argv[6]));
    }
    if (std::filesystem::exists(out_path) && std::filesystem::equivalent(in_path, out_path))
      throw std::runtime_error("OUT.csv must not be IN.csv");
    if (library != "-" && dlopen(library.c_str(), RTLD_NOW | RTLD_GLOBAL) == nullptr)
      throw std::runtime_error(std::string("cannot load the operator library: ") + dlerror());
    torch::jit::script::Module module = torch::jit::load(model_path);
    module.eval();
    const Table table = read_csv(in_path);
    const int64_t width = static_cast<int64_t>(table.header.size());
    torch::Tensor x = torch::from_blob(const_cast<float*>(table.values.data()), {table.rows, width},
                                       torch::kFloat32)
                          .clone();
    torch::Tensor mask = x.isnan().logical_not().to(torch::kFloat32);
    torch::NoGradGuard no_grad;
    torch::Tensor imputed = module.forward({x, mask}).toTensor().contiguous();
    write_csv(out_path, table, imputed);
    std::cout << "imputed " << (mask.numel() - mask.sum().item<int64_t>()) << " cells in "
              << table.rows << " rows -> " << out_path << "\n";
  } catch (const c10::Error& error) {
    std::cerr << "cpp_impute: " << last_line(error.what_without_backtrace()) << "\n";
    return 1;
  } catch (const std::exception& error) {
    std::cerr << "cpp_impute: " << last_line(error.what()) << "\n";
    return 1;
  }
  return 0;
}
