// The NF4 code book, in a header free of LibTorch so that CUDA sources can use it.
#ifndef OFT_SERVER_QUANT_NF4_CODEBOOK_H_
#define OFT_SERVER_QUANT_NF4_CODEBOOK_H_

namespace oft {

// The 16 NF4 levels of QLoRA / bitsandbytes, ascending; code i decodes to
// kNf4Codebook[i]. Every level is exactly representable in fp32.
inline constexpr float kNf4Codebook[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

// Code of the level 0.0 (used for padding and all-zero blocks).
inline constexpr unsigned kNf4ZeroCode = 7;

// Values per absmax group in double quantization.
inline constexpr long long kNf4DoubleQuantGroupSize = 256;

}  // namespace oft

#endif  // OFT_SERVER_QUANT_NF4_CODEBOOK_H_
