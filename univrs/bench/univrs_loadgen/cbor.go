// The CBOR the load generator needs: a few request shapes written by hand, and a decoder of
// the generic items the fast protocol's answers carry (no tags, no indefinite lengths).
package main

import (
	"errors"
	"fmt"
	"math"
)

// ------------------------------------------------------------------------- CBOR (a subset)

func head(buf []byte, major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return append(buf, m|byte(n))
	case n < 1<<8:
		return append(buf, m|24, byte(n))
	case n < 1<<16:
		return append(buf, m|25, byte(n>>8), byte(n))
	case n < 1<<32:
		return append(buf, m|26, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(buf, m|27, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32),
		byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

func text(buf []byte, s string) []byte {
	return append(head(buf, 3, uint64(len(s))), s...)
}

var errCBOR = errors.New("malformed CBOR")

// decode reads one item of the subset the fast protocol's responses use (no tags, no
// indefinite lengths); maps with text keys become map[string]any, others map[any]any.
func decode(b []byte, pos int, depth int) (any, int, error) {
	if pos >= len(b) || depth > 64 {
		return nil, pos, errCBOR
	}
	major, info := b[pos]>>5, b[pos]&0x1f
	pos++
	var n uint64
	switch {
	case info < 24:
		n = uint64(info)
	case info <= 27:
		width := 1 << (info - 24)
		if pos+width > len(b) {
			return nil, pos, errCBOR
		}
		for i := 0; i < width; i++ {
			n = n<<8 | uint64(b[pos+i])
		}
		pos += width
	default:
		return nil, pos, errCBOR
	}
	switch major {
	case 0:
		return n, pos, nil
	case 1:
		return -1 - int64(n), pos, nil
	case 2, 3:
		if n > uint64(len(b)-pos) {
			return nil, pos, errCBOR
		}
		end := pos + int(n)
		if major == 2 {
			return append([]byte(nil), b[pos:end]...), end, nil
		}
		return string(b[pos:end]), end, nil
	case 4:
		if n > uint64(len(b)-pos) {
			return nil, pos, errCBOR
		}
		out := make([]any, 0, n)
		for i := uint64(0); i < n; i++ {
			v, next, err := decode(b, pos, depth+1)
			if err != nil {
				return nil, next, err
			}
			out = append(out, v)
			pos = next
		}
		return out, pos, nil
	case 5:
		if n > uint64(len(b)-pos) {
			return nil, pos, errCBOR
		}
		out := make(map[string]any, n)
		for i := uint64(0); i < n; i++ {
			k, next, err := decode(b, pos, depth+1)
			if err != nil {
				return nil, next, err
			}
			v, after, err := decode(b, next, depth+1)
			if err != nil {
				return nil, after, err
			}
			if key, isText := k.(string); isText {
				out[key] = v
			} else {
				out[fmt.Sprint(k)] = v
			}
			pos = after
		}
		return out, pos, nil
	case 7:
		switch info {
		case 20:
			return false, pos, nil
		case 21:
			return true, pos, nil
		case 22, 23:
			return nil, pos, nil
		case 25:
			return float64(halfFloat(uint16(n))), pos, nil
		case 26:
			return float64(math.Float32frombits(uint32(n))), pos, nil
		case 27:
			return math.Float64frombits(n), pos, nil
		}
	}
	return nil, pos, errCBOR
}

func halfFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := int(h>>10) & 0x1f
	frac := uint32(h & 0x3ff)
	switch exp {
	case 0:
		return sign1(sign) * float32(frac) / (1 << 24) // subnormal: frac x 2^-24
	case 31:
		return math.Float32frombits(sign | 0x7f800000 | frac<<13)
	}
	return math.Float32frombits(sign | uint32(exp+112)<<23 | frac<<13)
}

func sign1(sign uint32) float32 {
	if sign != 0 {
		return -1
	}
	return 1
}

func decodeAll(b []byte) (any, error) {
	v, end, err := decode(b, 0, 0)
	if err == nil && end != len(b) {
		err = errCBOR
	}
	return v, err
}
