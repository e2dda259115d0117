package wxevents

import "strings"

// The JetStream layout of the events: which stream holds them and on which
// subjects. internal/topology, which creates the stream, takes these from
// here, so that the producer and every subscriber agree by construction.
const (
	// Stream is the JetStream stream that holds the events.
	Stream = "WECHATPAY_EVENTS"
	// SubjectPrefix starts every event subject.
	SubjectPrefix = "wechatpay.events."
	// NoSubMerchant is the <sub> token of a direct merchant's event, which
	// has no sub-merchant.
	NoSubMerchant = "_"
)

// Subject is where an event of type t for merchant mchid and sub-merchant
// sub ("" for a direct merchant) is published:
// "wechatpay.events.<type>.<mchid>.<sub>", e.g.
// "wechatpay.events.payment.succeeded.1900000100._", so that a service
// provider can subscribe per sub-merchant.
func Subject(t Type, mchid, sub string) string {
	if sub == "" {
		sub = NoSubMerchant
	}
	return SubjectPrefix + string(t) + "." + mchid + "." + sub
}

// SubjectParts are the tokens of an event subject.
type SubjectParts struct {
	Type     Type   // e.g. "payment.succeeded"
	MchID    string // the merchant
	SubMchID string // the sub-merchant, "" for NoSubMerchant
}

// ParseSubject splits an event subject into its type, merchant and
// sub-merchant. A subject of the layout before sub-merchants
// ("wechatpay.events.<type>.<mchid>", which may still be in the stream's
// history) parses with SubMchID "".
func ParseSubject(subject string) (SubjectParts, bool) {
	rest, found := strings.CutPrefix(subject, SubjectPrefix)
	if !found {
		return SubjectParts{}, false
	}
	tok := strings.Split(rest, ".")
	if len(tok) != 3 && len(tok) != 4 {
		return SubjectParts{}, false
	}
	for _, t := range tok {
		if t == "" {
			return SubjectParts{}, false
		}
	}
	p := SubjectParts{Type: Type(tok[0] + "." + tok[1]), MchID: tok[2]}
	if len(tok) == 4 && tok[3] != NoSubMerchant {
		p.SubMchID = tok[3]
	}
	return p, true
}

// SubjectFilter is the subject filter of the events of type pattern typ (a
// Type, or with '*' tokens: "refund.*"; "" for every type), merchant mchid
// and sub-merchant sub. An empty mchid or sub matches any; sub NoSubMerchant
// matches direct-merchant events only.
func SubjectFilter(typ, mchid, sub string) string {
	if typ == "" {
		typ = "*.*"
	}
	if mchid == "" {
		mchid = "*"
	}
	if sub == "" {
		sub = "*"
	}
	return SubjectPrefix + typ + "." + mchid + "." + sub
}
