// Minimal "--name=value" parsing shared by the command-line tools and benchmarks.
#ifndef OFT_SERVER_COMMON_FLAGS_H_
#define OFT_SERVER_COMMON_FLAGS_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace oft {

// True when `arg` is "<name>=<value>" (name includes the leading dashes); points `value`
// at the text after '='.
inline bool ParseFlag(const char* arg, const char* name, const char** value) {
  const size_t n = std::strlen(name);
  if (std::strncmp(arg, name, n) != 0 || arg[n] != '=') return false;
  *value = arg + n + 1;
  return true;
}

inline bool ParseFlag(const char* arg, const char* name, std::string* value) {
  const char* v = nullptr;
  if (!ParseFlag(arg, name, &v)) return false;
  *value = v;
  return true;
}

// "32,128,256" -> {32, 128, 256}: the integers of a comma-separated flag value.
inline std::vector<int64_t> ParseIntList(const char* s) {
  std::vector<int64_t> out;
  for (const char* p = s; *p;) {
    char* end = nullptr;
    out.push_back(std::strtoll(p, &end, 10));
    if (end == p) break;  // not a number: stop rather than loop
    p = end;
    if (*p == ',') ++p;
  }
  return out;
}

// The --help convention of every binary: when an argument is "--help" or "-h", prints
// `usage` to stdout and returns true; the caller then exits with status 0.
inline bool AnswerHelp(int argc, char** argv, const char* usage) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::fputs(usage, stdout);
      return true;
    }
  }
  return false;
}

}  // namespace oft

#endif  // OFT_SERVER_COMMON_FLAGS_H_
