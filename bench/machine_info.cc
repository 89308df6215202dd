#include "bench/machine_info.h"

#include <cstdio>

#include "server/oft/cpu_isa.h"

namespace oft::bench {
namespace {

std::string JsonEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned char>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

bool InitCpuIsa(const char* program) {
  const absl::Status s = cpu::CheckCpuIsaEnvironment();
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", program, std::string(s.message()).c_str());
    return false;
  }
  return true;
}

std::string IsaCpuJsonFields() {
  return std::string("\"isa\":\"") + cpu::IsaName(cpu::ActiveIsa()) + "\",\"cpu\":\"" +
         JsonEscape(cpu::CpuModelName()) + "\"";
}

}  // namespace oft::bench
