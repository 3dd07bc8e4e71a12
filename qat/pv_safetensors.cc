#include "qat/pv_safetensors.h"

#include <ATen/ATen.h>

#include <cctype>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <vector>

#include "base/error.h"
#include "qat/pv_quantized.h"

namespace thinwire::qat {
namespace {

const char* dtypeName(at::ScalarType type) {
  switch (type) {
    case at::kByte:
      return "U8";
    case at::kLong:
      return "I64";
    case at::kFloat:
      return "F32";
    default:
      return nullptr;
  }
}

at::ScalarType dtypeFromName(const std::string& name) {
  if (name == "U8") return at::kByte;
  if (name == "I64") return at::kLong;
  if (name == "F32") return at::kFloat;
  TW_THROW(DataError, "safetensors dtype '", name, "' is not supported (U8, I64, F32)");
}

std::string quoted(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// The subset of JSON a safetensors header uses: objects, arrays, strings, integers.
struct JsonValue {
  enum class Kind { kObject, kArray, kString, kNumber } kind = Kind::kNumber;
  std::map<std::string, JsonValue> object;
  std::vector<JsonValue> array;
  std::string text;
  int64_t number = 0;
};

class JsonParser {
 public:
  explicit JsonParser(const std::string& text) : text_(text) {}

  JsonValue parse() {
    JsonValue value = parseValue();
    skipSpace();
    if (pos_ != text_.size()) fail("trailing characters");
    return value;
  }

 private:
  [[noreturn]] void fail(const char* what) const {
    TW_THROW(DataError, "malformed safetensors header at byte ", pos_, ": ", what);
  }
  void skipSpace() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }
  char peek() {
    skipSpace();
    if (pos_ >= text_.size()) fail("unexpected end");
    return text_[pos_];
  }
  void expect(char c) {
    if (peek() != c) fail("unexpected character");
    ++pos_;
  }
  std::string parseString() {
    expect('"');
    std::string out;
    while (pos_ < text_.size() && text_[pos_] != '"') {
      if (text_[pos_] == '\\') {
        ++pos_;
        if (pos_ >= text_.size()) fail("unterminated escape");
      }
      out += text_[pos_++];
    }
    if (pos_ >= text_.size()) fail("unterminated string");
    ++pos_;
    return out;
  }
  JsonValue parseValue() {
    JsonValue value;
    const char c = peek();
    if (c == '{') {
      value.kind = JsonValue::Kind::kObject;
      ++pos_;
      if (peek() == '}') {
        ++pos_;
        return value;
      }
      while (true) {
        std::string key = parseString();
        expect(':');
        value.object[key] = parseValue();
        if (peek() == ',') {
          ++pos_;
          continue;
        }
        expect('}');
        return value;
      }
    }
    if (c == '[') {
      value.kind = JsonValue::Kind::kArray;
      ++pos_;
      if (peek() == ']') {
        ++pos_;
        return value;
      }
      while (true) {
        value.array.push_back(parseValue());
        if (peek() == ',') {
          ++pos_;
          continue;
        }
        expect(']');
        return value;
      }
    }
    if (c == '"') {
      value.kind = JsonValue::Kind::kString;
      value.text = parseString();
      return value;
    }
    if (c == '-' || std::isdigit(static_cast<unsigned char>(c))) {
      size_t used = 0;
      try {
        value.number = std::stoll(text_.substr(pos_, 24), &used);
      } catch (const std::exception&) {
        fail("bad number");
      }
      pos_ += used;
      return value;
    }
    fail("unsupported value");
  }

  const std::string& text_;
  size_t pos_ = 0;
};

const JsonValue& member(const JsonValue& object, const std::string& key, const std::string& of) {
  auto it = object.object.find(key);
  if (object.kind != JsonValue::Kind::kObject || it == object.object.end()) {
    TW_THROW(DataError, "safetensors entry ", of, " lacks '", key, "'");
  }
  return it->second;
}

}  // namespace

void writePvSafetensors(const std::string& path,
                        const StateDict& tensors,
                        const std::map<std::string, std::string>& metadata) {
  std::ostringstream header;
  header << "{\"__metadata__\":{";
  bool first = true;
  for (const auto& [key, value] : metadata) {
    header << (first ? "" : ",") << quoted(key) << ":" << quoted(value);
    first = false;
  }
  header << "}";
  std::vector<at::Tensor> data;
  int64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    const char* dtype = dtypeName(tensor.scalar_type());
    TW_CHECK(dtype != nullptr, "safetensors export of ", name, ": dtype ", tensor.scalar_type(),
             " is not U8, I64 or F32");
    at::Tensor t = tensor.detach().contiguous().cpu();
    const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
    header << "," << quoted(name) << ":{\"dtype\":\"" << dtype << "\",\"shape\":[";
    for (int64_t d = 0; d < t.dim(); ++d) header << (d ? "," : "") << t.size(d);
    header << "],\"data_offsets\":[" << offset << "," << offset + bytes << "]}";
    offset += bytes;
    data.push_back(t);
  }
  header << "}";
  std::string json = header.str();
  // The format recommends 8-byte alignment of the data section; pad the header with spaces.
  while (json.size() % 8 != 0) json += ' ';
  const std::string temporary = path + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) TW_THROW(Error, "cannot write ", temporary);
    const uint64_t length = json.size();
    unsigned char prefix[8];
    for (int i = 0; i < 8; ++i) prefix[i] = static_cast<unsigned char>((length >> (8 * i)) & 0xFF);
    out.write(reinterpret_cast<const char*>(prefix), 8);
    out.write(json.data(), static_cast<std::streamsize>(json.size()));
    for (const auto& t : data) {
      out.write(static_cast<const char*>(t.data_ptr()),
                static_cast<std::streamsize>(t.numel() * t.element_size()));
    }
    if (!out) TW_THROW(Error, "failed writing ", temporary);
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    TW_THROW(Error, "cannot rename ", temporary, " to ", path);
  }
}

PvSafetensors readPvSafetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) TW_THROW(DataError, "cannot open safetensors file ", path);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() < 8) TW_THROW(DataError, path, ": shorter than the 8-byte header length");
  uint64_t length = 0;
  for (int i = 0; i < 8; ++i) {
    length |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  }
  if (length > bytes.size() - 8) TW_THROW(DataError, path, ": header length ", length, " too big");
  const std::string json = bytes.substr(8, length);
  const JsonValue header = JsonParser(json).parse();
  if (header.kind != JsonValue::Kind::kObject) TW_THROW(DataError, path, ": header not an object");
  const size_t dataStart = 8 + length;
  PvSafetensors out;
  for (const auto& [name, entry] : header.object) {
    if (name == "__metadata__") {
      for (const auto& [key, value] : entry.object) out.metadata[key] = value.text;
      continue;
    }
    const at::ScalarType dtype = dtypeFromName(member(entry, "dtype", name).text);
    std::vector<int64_t> shape;
    for (const auto& d : member(entry, "shape", name).array) shape.push_back(d.number);
    const auto& offsets = member(entry, "data_offsets", name).array;
    if (offsets.size() != 2) TW_THROW(DataError, path, ": ", name, " needs two data_offsets");
    const int64_t begin = offsets[0].number;
    const int64_t end = offsets[1].number;
    at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dtype));
    const int64_t expected = t.numel() * static_cast<int64_t>(t.element_size());
    if (begin < 0 || end - begin != expected ||
        dataStart + static_cast<size_t>(end) > bytes.size()) {
      TW_THROW(DataError, path, ": ", name, " has data_offsets [", begin, ", ", end,
               "] that do not fit its shape or the file");
    }
    std::memcpy(t.data_ptr(), bytes.data() + dataStart + begin, static_cast<size_t>(expected));
    out.tensors[name] = t;
  }
  return out;
}

void loadPvQuantized(torch::nn::Module& model, const PvSafetensors& file) {
  auto meta = [&](const std::string& key) -> const std::string& {
    auto it = file.metadata.find(key);
    if (it == file.metadata.end()) TW_THROW(DataError, "PV export lacks metadata '", key, "'");
    return it->second;
  };
  if (meta("format") != kPvFormatName || meta("version") != std::to_string(kPvFormatVersion)) {
    TW_THROW(DataError, "not a ", kPvFormatName, " version ", kPvFormatVersion, " export (format '",
             meta("format"), "', version '", meta("version"), "')");
  }
  const int64_t groupSize = std::stoll(meta("group_size"));
  auto entry = [&](const std::string& key) -> const at::Tensor& {
    auto it = file.tensors.find(key);
    if (it == file.tensors.end()) TW_THROW(DataError, "PV export lacks entry '", key, "'");
    return it->second;
  };
  at::NoGradGuard noGrad;
  for (auto& item : model.named_parameters(/*recurse=*/true)) {
    at::Tensor& target = item.value();
    at::Tensor value;
    if (file.tensors.count(item.key() + ".codes") != 0) {
      value = dequantize(entry(item.key() + ".codes"), entry(item.key() + ".scales"),
                         entry(item.key() + ".zeros"), groupSize);
    } else {
      value = entry(item.key());
    }
    if (value.sizes() != target.sizes()) {
      TW_THROW(DataError, "PV export entry ", item.key(), " has shape ", value.sizes(),
               ", the model's is ", target.sizes());
    }
    target.copy_(value);
  }
}

}  // namespace thinwire::qat
