package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/wxpay-events/wxpay-events/internal/config"
	"github.com/wxpay-events/wxpay-events/internal/receiver"
	"github.com/wxpay-events/wxpay-events/internal/verify"
)

func init() { commands = append(commands, verifyCommand) }

// hints tell the operator what to do about each failed check.
var hints = map[string]string{
	"missing_header":             "a proxy may have dropped the Wechatpay-* headers; capture them where the request arrives",
	"unsupported_signature_type": "only WECHATPAY2-SHA256-RSA2048 is supported (not SM2 or brand-merchant signatures)",
	"bad_timestamp":              "Wechatpay-Timestamp must be unix seconds",
	"stale_timestamp":            "checking a capture later? pass --now with its Wechatpay-Timestamp; live: check the server clock (NTP)",
	"probe":                      "a WECHATPAY/SIGNTEST/ signature probe: WeChat Pay sends these on purpose and expects a 4xx/5xx, so nothing is wrong",
	"unknown_serial":             "PUB_KEY_ID_… needs WECHATPAY_PUBLIC_KEY_ID/FILE; a hex serial needs that platform certificate (or a private key to download them)",
	"bad_base64":                 "the signature header was altered on the way",
	"signature_mismatch":         "the body must be byte for byte as received (no re-encoding, no added newline); or the key for this serial is wrong",
}

type verifyResult struct {
	OK     bool   `json:"ok"`
	MchID  string `json:"mchid"`
	Serial string `json:"serial"`
	Check  string `json:"failed_check,omitempty"`
	Error  string `json:"error,omitempty"`
	Hint   string `json:"hint,omitempty"`
}

func verifyCommand(g *globals) *cobra.Command {
	var headersFile, bodyFile, mchid string
	var now int64
	cmd := &cobra.Command{
		Use:   "verify --headers FILE --body FILE --mchid M [--now UNIX]",
		Short: "Verify a captured notification with the configured keys and name the check that fails",
		Long: `Verify a captured WeChat Pay notification exactly as the receiver would.

The headers file holds HTTP header lines ("Name: value"), as curl -D or a proxy log writes
them; the body file holds the raw body byte for byte. Keys come from the same configuration
as the receiver (WECHATPAY_MCHID + WECHATPAY_PUBLIC_KEY_ID/FILE + WECHATPAY_PLATFORM_CERT_FILES,
or WECHATPAY_ACCOUNTS_FILE).`,
		Example: `  # WeChat Pay says 验签失败 / the receiver answered 401: replay the capture at its own time
  wxpayctl verify --headers req.headers --body req.body --mchid 1900000100 \
      --now $(grep -i '^Wechatpay-Timestamp' req.headers | cut -d' ' -f2 | tr -d '\r')

  # the same as JSON, for a script
  wxpayctl verify --headers req.headers --body req.body --mchid 1900000100 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rawHeaders, err := readFile(headersFile)
			if err != nil {
				return err
			}
			body, err := readFile(bodyFile)
			if err != nil {
				return err
			}
			hdr, err := verify.ParseHeaderLines(rawHeaders)
			if err != nil {
				return runtime(fmt.Errorf("%s: %w", headersFile, err))
			}
			cfg, err := config.LoadReceiver(nil, g.env.Getenv, io.Discard)
			if err != nil {
				return runtime(err)
			}
			clock := time.Now
			if now != 0 {
				clock = func() time.Time { return time.Unix(now, 0) }
			}
			// Certificates are downloaded now, whatever --now says; only warnings reach stderr.
			certLog := zerolog.New(g.env.Stderr).Level(zerolog.WarnLevel)
			keys, err := receiver.BuildVerifiers(cmd.Context(), cfg.Accounts, receiver.CertOptions{Log: certLog},
				verify.WithClock(clock), verify.WithMaxSkew(cfg.MaxSkew))
			if err != nil {
				return runtime(err)
			}
			defer keys.Stop()
			v, ok := keys.ByMchID[mchid]
			if !ok {
				return failed(fmt.Errorf("merchant %s is not configured (configured: %d account(s))", mchid, len(keys.ByMchID)))
			}
			h := verify.HeadersFrom(hdr)
			res := verifyResult{OK: true, MchID: mchid, Serial: h.Serial}
			if err := v.Verify(context.WithoutCancel(cmd.Context()), h, body); err != nil {
				res = verifyResult{MchID: mchid, Serial: h.Serial, Check: verify.Reason(err), Error: err.Error(), Hint: hints[verify.Reason(err)]}
			}
			printVerify(g, res)
			if !res.OK {
				return failed(fmt.Errorf("verification failed: %s", res.Check))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&headersFile, "headers", "", "file of captured header lines (required)")
	cmd.Flags().StringVar(&bodyFile, "body", "", "file holding the raw body (required)")
	cmd.Flags().StringVar(&mchid, "mchid", "", "merchant id the notification was sent to (required)")
	cmd.Flags().Int64Var(&now, "now", 0, "verify as if the clock read this unix time (default: now)")
	for _, f := range []string{"headers", "body", "mchid"} {
		_ = cmd.MarkFlagRequired(f)
	}
	return cmd
}

func printVerify(g *globals, r verifyResult) {
	out := g.env.Stdout
	if g.output == "json" {
		_ = json.NewEncoder(out).Encode(r)
		return
	}
	if r.OK {
		fmt.Fprintf(out, "OK: signature verified for merchant %s with key %s\n", r.MchID, r.Serial)
		return
	}
	fmt.Fprintf(out, "FAILED check: %s\n  error: %s\n", r.Check, r.Error)
	if r.Hint != "" {
		fmt.Fprintf(out, "  hint:  %s\n", r.Hint)
	}
}
