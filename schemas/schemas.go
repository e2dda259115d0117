// Package schemas embeds the project's published contract: a JSON Schema
// (draft 2020-12) for the data of each domain event, one for the CloudEvents
// envelope (cloudevent.json), shared definitions (defs.json) and the AsyncAPI
// 3.0 description of the JetStream streams (asyncapi.yaml). It also compiles
// the JSON Schemas into a validator with format assertion on.
package schemas

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"

	"github.com/wxpay-events/wxpay-events/internal/events"
)

//go:embed *.json *.yaml
var files embed.FS

// FS returns the embedded schema files, at the root of the returned FS.
func FS() fs.FS { return files }

const (
	// EnvelopeSchema is the file name of the CloudEvents envelope schema.
	EnvelopeSchema = "cloudevent.json"
	// defsSchema holds shared definitions only; it validates no document.
	defsSchema = "defs.json"
	// baseURL names the embedded files inside the compiler: the absolute URI
	// an event's dataschema names. Nothing is ever fetched from it.
	baseURL = events.DataSchemaBase
)

var (
	// ErrUnknownSchema means a schema name is not a data schema of this set.
	ErrUnknownSchema = errors.New("schemas: unknown schema")
	// ErrInvalid means a document does not satisfy its schema. The wrapped
	// message lists where and which keyword failed, never the offending values.
	ErrInvalid = errors.New("schemas: document does not match its schema")
)

// Set is the compiled set of schemas. It is safe for concurrent use.
type Set struct {
	data     map[string]*jsonschema.Schema // by file name, e.g. "payment.succeeded.json"
	envelope *jsonschema.Schema
}

// Load compiles every embedded JSON Schema, asserting formats (date-time,
// uuid, …). It fails only if the embedded files are broken.
func Load() (*Set, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.UseLoader(jsonschema.SchemeURLLoader{}) // embedded files only: never the network or disk
	names, err := fs.Glob(files, "*.json")
	if err != nil {
		return nil, fmt.Errorf("schemas: %w", err)
	}
	for _, name := range names {
		b, err := files.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("schemas: %w", err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("schemas: %s: %w", name, err)
		}
		if err := c.AddResource(baseURL+name, doc); err != nil {
			return nil, fmt.Errorf("schemas: %s: %w", name, err)
		}
	}
	s := &Set{data: make(map[string]*jsonschema.Schema)}
	for _, name := range names {
		sch, err := c.Compile(baseURL + name)
		if err != nil {
			return nil, fmt.Errorf("schemas: compile %s: %w", name, err)
		}
		switch name {
		case EnvelopeSchema:
			s.envelope = sch
		case defsSchema:
		default:
			s.data[name] = sch
		}
	}
	if s.envelope == nil {
		return nil, fmt.Errorf("schemas: %s is not embedded", EnvelopeSchema)
	}
	return s, nil
}

// Names returns the file names of the data schemas, sorted.
func (s *Set) Names() []string {
	out := make([]string, 0, len(s.data))
	for name := range s.data {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// ValidateData validates the data of an event against the data schema named
// schemaName (e.g. "refund.closed.json"): ErrUnknownSchema for a name outside
// Names, ErrInvalid for data that is not JSON or does not match.
func (s *Set) ValidateData(schemaName string, data []byte) error {
	sch, ok := s.data[schemaName]
	if !ok {
		return fmt.Errorf("%w: %.64q", ErrUnknownSchema, schemaName)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("%w: %s: not a single JSON value", ErrInvalid, schemaName)
	}
	return validate(sch, schemaName, doc)
}

// ValidateCloudEvent validates a CloudEvents JSON document against
// cloudevent.json, then its data against the schema its dataschema (an
// absolute URI, events.DataSchemaBase + file name) names.
func (s *Set) ValidateCloudEvent(doc []byte) error {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return fmt.Errorf("%w: %s: not a single JSON value", ErrInvalid, EnvelopeSchema)
	}
	if err := validate(s.envelope, EnvelopeSchema, v); err != nil {
		return err
	}
	obj := v.(map[string]any) // the envelope schema requires an object
	uri, _ := obj["dataschema"].(string)
	name, inSet := strings.CutPrefix(uri, baseURL)
	sch, ok := s.data[name]
	if !inSet || !ok {
		return fmt.Errorf("%w: dataschema %.128q", ErrUnknownSchema, uri)
	}
	return validate(sch, name, obj["data"])
}

func validate(sch *jsonschema.Schema, name string, v any) error {
	err := sch.Validate(v)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return fmt.Errorf("%w: %s: %w", ErrInvalid, name, err)
	}
	return fmt.Errorf("%w: %s: %s", ErrInvalid, name, describe(ve))
}

// describe lists the failing leaves of a validation error as
// "<instance pointer>: <keyword>", naming missing properties and JSON types
// but never quoting values, which may be personal data.
func describe(ve *jsonschema.ValidationError) string {
	var problems []string
	var walk func(*jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if k, ok := e.ErrorKind.(*kind.OneOf); ok {
			// The leaves of every alternative say little; name the keyword.
			what := "matches no oneOf alternative"
			if len(k.Subschemas) > 1 {
				what = "matches more than one oneOf alternative"
			}
			problems = append(problems, jsonPointer(e.InstanceLocation)+": "+what)
			return
		}
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		var what string
		switch k := e.ErrorKind.(type) {
		case *kind.Required:
			what = "missing " + strings.Join(k.Missing, ", ")
		case *kind.Type:
			what = "got " + k.Got + ", want " + strings.Join(k.Want, " or ")
		case *kind.Format:
			what = "not a valid " + k.Want
		default:
			what = strings.Join(e.ErrorKind.KeywordPath(), "/")
		}
		problems = append(problems, jsonPointer(e.InstanceLocation)+": "+what)
	}
	walk(ve)
	const shown = 6
	if len(problems) > shown {
		problems = append(problems[:shown], fmt.Sprintf("and %d more", len(problems)-shown))
	}
	return strings.Join(problems, "; ")
}

// jsonPointer renders an instance location as an RFC 6901 JSON pointer.
func jsonPointer(tokens []string) string {
	if len(tokens) == 0 {
		return "/"
	}
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		b.WriteString(strings.NewReplacer("~", "~0", "/", "~1").Replace(t))
	}
	return b.String()
}
