// A LibTorch program that loads a signed model with sentry::load_verified: every byte of the
// signed directory is checked on its way to the device (the CPU, or a GPU with a fourth
// argument), the tensors go into a small MLP's parameters, and a forward pass runs. Then a copy
// of the directory with one byte of its weights flipped is refused, naming the file.
//
//   load_model_example MODEL_DIR SIGNATURE PUBLIC_KEY [cuda|cuda:N]
#include <sentry/sentry.h>
#include <torch/torch.h>

#include "read_file.h"

#include <dirent.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <stdexcept>

namespace {

// No std::filesystem here: PyTorch's Linux wheels export the copy of it they link statically
// (pytorch/pytorch#133437), calls bind to that copy, and with the CUDA 2.11 wheel its
// remove_all jumped to a null pointer. PyTorch itself avoids <filesystem> on Linux for this.

// The regular files directly in `dir` (the example model is one flat directory).
std::vector<std::string> file_names(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) throw std::runtime_error(dir + ": cannot be listed");
  std::vector<std::string> names;
  while (const dirent* entry = ::readdir(d)) {
    const std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(d);
  return names;
}

// A copy of the model directory whose weights file has its last byte flipped.
std::string tampered_copy(const std::string& model_dir) {
  const char* tmp = std::getenv("TMPDIR");
  std::string copy = std::string(tmp && *tmp ? tmp : "/tmp") + "/sentry_tampered_XXXXXX";
  if (!::mkdtemp(copy.data())) throw std::runtime_error(copy + ": cannot be created");
  for (const std::string& name : file_names(model_dir)) {
    std::string bytes = example::read_file(model_dir + "/" + name);
    if (name == "model.safetensors" && !bytes.empty()) bytes.back() ^= 1;
    std::ofstream(copy + "/" + name, std::ios::binary) << bytes;
  }
  return copy;
}

void remove_copy(const std::string& copy) {
  for (const std::string& name : file_names(copy)) ::unlink((copy + "/" + name).c_str());
  ::rmdir(copy.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4 && argc != 5) {
    std::cerr << "usage: " << argv[0] << " MODEL_DIR SIGNATURE PUBLIC_KEY [cuda|cuda:N]\n";
    return 2;
  }
  const std::string model_dir = argv[1], signature = argv[2];
  const sentry::Trust trust =
      sentry::Trust::public_key(sentry::crypto::PublicKey::from_pem(example::read_file(argv[3])));
  sentry::LoadVerifiedOptions options;
  options.device = torch::Device(argc == 5 ? argv[4] : "cpu");

  torch::nn::Sequential model(torch::nn::Linear(4, 8), torch::nn::ReLU(), torch::nn::Linear(8, 2));
  model->to(options.device);
  try {
    const sentry::NamedTensors state = sentry::load_verified(model_dir, signature, trust, options);
    auto params = model->named_parameters();
    if (state.size() != params.size()) throw std::runtime_error("not the model's tensors");
    torch::NoGradGuard no_grad;
    for (const auto& [name, tensor] : state) {
      std::cout << "loaded " << name << " " << tensor.sizes() << " on " << tensor.device() << "\n";
      params[name].copy_(tensor);  // throws for a name the model does not have
    }
  } catch (const std::exception& e) {
    std::cerr << "refused: " << e.what() << "\n";
    return 1;
  }
  const torch::Tensor out = model->forward(torch::ones({1, 4}, options.device));
  std::cout << "forward: " << out.cpu() << "\n";

  // One flipped byte in a copy of the directory: refused, the file named, nothing returned.
  const std::string copy = tampered_copy(model_dir);
  int status = 0;
  try {
    sentry::load_verified(copy, signature, trust, options);
    std::cerr << "a tampered copy loaded\n";
    status = 1;
  } catch (const sentry::VerificationError& e) {
    std::cout << "tampered copy refused: " << e.what() << "\n";
    if (std::string(e.what()).find("model.safetensors") == std::string::npos) status = 1;
  }
  remove_copy(copy);
  return status;
}
